"""How large and how fast a report page is, for runs of 10 to hundreds of images.

Builds synthetic restore runs (each image: a noisy input, five steps, a result, saved as `tir-agent
restore --report` saves them: small step thumbnails and a larger input and result, JPEG q85, from
crops of scikit-image's photos), writes the page with images embedded (small runs' default) and
linked (large runs' default), and loads each in headless Chromium from disk, timing until the
DOM is dumped (the page parsed, its images decoded).

    python benchmarks/report_pages.py [--sizes 10 20 300]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_report

from tiragent.agent.record import COMPARISON, THUMBNAIL
from tiragent.eval.html_report import EMBED_UP_TO, restore_report
from tiragent.images import write_image


def fake_run(folder: Path, count: int) -> Path:
    from skimage import data
    from skimage.transform import resize

    photo = data.astronaut().astype(np.float32) / 255
    rng = np.random.default_rng(0)
    for i in range(count):
        stem = f"img{i:04d}"
        images = folder / stem
        images.mkdir(parents=True)
        top, left = rng.integers(0, 128, 2)
        view = np.ascontiguousarray(photo[top : top + 384, left : left + 384])
        big = resize(view, (COMPARISON, COMPARISON), anti_aliasing=True).astype(np.float32)
        write_image(np.clip(big + rng.normal(0, 0.05, big.shape), 0, 1).astype(np.float32), images / "input.jpg", quality=85)
        write_image(big, images / "result.jpg", quality=85)
        steps = []
        for k in range(5):
            thumb = resize(view, (THUMBNAIL, THUMBNAIL), anti_aliasing=True).astype(np.float32)
            write_image(thumb, images / f"{k:02d}_denoise.unet.jpg", quality=85)
            steps.append({"index": k, "task": "denoise", "model": "unet", "params": {}, "input_id": f"a{k}", "output_id": f"b{k}", "width": COMPARISON,
                          "height": COMPARISON, "seconds": 0.1, "queue_wait_seconds": 0.0, "metrics": {"niqe": 5.0, "piqe": 30.0}, "error": None,
                          "thumbnail": f"{stem}/{k:02d}_denoise.unet.jpg"})  # fmt: skip
        record = {"input": f"{stem}.png", "original_id": "a0", "final_id": "b4", "policy": "fixed", "steps": steps, "path": [0, 1, 2, 3, 4],
                  "tool_calls": 5, "seconds": 1.0, "stop_reason": "done", "original_metrics": {"niqe": 9.0},
                  "files": {"input": f"{stem}/input.jpg", "result": f"{stem}/result.jpg"}}  # fmt: skip
        (folder / f"{stem}.json").write_text(json.dumps(record))
    return folder


def load_seconds(browser: str, page: Path, repeats: int) -> float:
    offline = ["--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([browser, *offline, "--dump-dom", page.as_uri()], capture_output=True, timeout=300, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 300])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("needs chromium (apt-get install chromium)")
    rows, data = [], []
    with tempfile.TemporaryDirectory() as tmp:
        blank = Path(tmp) / "blank.html"
        blank.write_text("<!DOCTYPE html><html><body>empty</body></html>")
        baseline = load_seconds(browser, blank, args.repeats)
        for count in args.sizes:
            run = fake_run(Path(tmp) / f"run{count}", count)
            for embed in (True, False):
                page = run / ("embedded.html" if embed else "linked.html")
                started = time.perf_counter()
                page.write_text(restore_report(run, out=page, embed=embed))
                build = time.perf_counter() - started
                seconds = load_seconds(browser, page, args.repeats)
                mb = page.stat().st_size / 2**20
                rows.append(f"| {count} | {'embedded' if embed else 'linked'} | {mb:.1f} | {build:.2f} | {seconds:.2f} | {seconds - baseline:.2f} |")
                data.append({"images": count, "embedded": embed, "mb": mb, "build_s": build, "load_s": seconds})
                print(rows[-1], flush=True)
    markdown = (
        "# Report pages: size and load time\n\n"
        f"Synthetic restore runs (5 steps per image; {THUMBNAIL}-px thumbnails, {COMPARISON}-px input (noisy: the worst case for JPEG) and result, "
        "JPEG q85). Load: headless Chromium "
        f"from disk with the network off, until `--dump-dom` returns (median of {args.repeats}); an empty page takes {baseline:.2f} s, "
        f"most of it the browser's start. `tir-agent report` embeds the images of runs of up to {EMBED_UP_TO} images and links them beside the page "
        "above that (`--images embed|link` overrides).\n\n"
        "| images | images in the page | page (MB) | build (s) | load (s) | load minus an empty page (s) |\n|---:|---|---:|---:|---:|---:|\n"
        + "\n".join(rows) + "\n"
    )
    print(write_report("report_pages", markdown, {"rows": data, "empty_page_s": baseline}))


if __name__ == "__main__":
    main()
