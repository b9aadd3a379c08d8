"""Accuracy of the `detect_degradations` detector on a benchmark folder.

Per degradation (present or not, threshold 0.5) and exact set, over all images and over
those whose clean source the detector never saw (CBSD68 images after the first 34).

    python benchmarks/detector.py [--bench /tmp/tir-agent-devbench]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import SHARED_DATA, write_report

from tiragent.eval.bench import load_manifest
from tiragent.images import list_images, read_image
from tiragent.server.perception import detect
from tiragent.tasks import TASK_OF_DEGRADATION as TASK_OF


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", type=Path, default=Path("/tmp/tir-agent-devbench"))
    parser.add_argument("--clean", type=Path, default=SHARED_DATA / "clean" / "CBSD68")
    parser.add_argument("--trained-on", type=int, default=34, help="the detector saw the first N clean images")
    args = parser.parse_args()
    seen = {p.name for p in list_images(args.clean)[: args.trained_on]}
    rows = []
    for item in load_manifest(args.bench):
        probabilities = detect(read_image(args.bench / "input" / item.name))
        truth = {name: name in item.combination for name in TASK_OF}
        guess = {name: probabilities[name] > 0.5 for name in TASK_OF}
        rows.append({"heldout": item.source not in seen, "truth": truth, "guess": guess})
    lines = ["| degradation | accuracy, all images | accuracy, held-out sources | recall (held-out) | false alarms (held-out) |", "|---|---:|---:|---:|---:|"]
    for name in TASK_OF:
        acc = np.mean([r["truth"][name] == r["guess"][name] for r in rows])
        held = [r for r in rows if r["heldout"]]
        hacc = np.mean([r["truth"][name] == r["guess"][name] for r in held])
        positives = [r for r in held if r["truth"][name]]
        negatives = [r for r in held if not r["truth"][name]]
        recall = np.mean([r["guess"][name] for r in positives]) if positives else float("nan")
        false_alarm = np.mean([r["guess"][name] for r in negatives]) if negatives else float("nan")
        lines.append(f"| {name} | {acc:.3f} | {hacc:.3f} | {recall:.3f} | {false_alarm:.3f} |")
    exact_all = np.mean([r["truth"] == r["guess"] for r in rows])
    exact_held = np.mean([r["truth"] == r["guess"] for r in rows if r["heldout"]])
    n_held = sum(r["heldout"] for r in rows)
    header = (
        f"Benchmark `{args.bench}` ({len(rows)} images; {n_held} from clean sources the detector never saw). "
        f"Exact set of degradations right: {exact_all:.3f} of all images, {exact_held:.3f} of held-out ones.\n\n"
    )
    markdown = header + "\n".join(lines) + "\n"
    print(markdown)
    print("written to", write_report("detector", markdown, {"rows": len(rows), "exact_all": exact_all, "exact_heldout": exact_held}))


if __name__ == "__main__":
    main()
