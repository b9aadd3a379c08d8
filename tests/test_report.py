"""The HTML report of a run: every step in order with its tool and metrics, explored branches marked, images embedded,
nothing fetched; and a real headless browser renders it from disk."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from tiragent.agent.actions import Action, Stop
from tiragent.agent.loop import restore
from tiragent.agent.record import save_record
from tiragent.cli import main
from tiragent.eval.degradations import degrade
from tiragent.eval.html_report import restore_report
from tiragent.images import write_image

pytestmark = pytest.mark.anyio


class Explores:
    """Two steps, then keeps the first one's result: the second is an explored branch, rolled back."""

    name = "explores"
    default_max_steps = 4

    async def reset(self, observation):
        pass

    async def next(self, observation):
        plan = [Action("dehaze", "dcp"), Action("denoise", "nlm")]
        if len(observation.steps) < len(plan):
            return plan[len(observation.steps)]
        return Stop(final=observation.steps[0].output_id, reason="kept the first step")


@pytest.fixture
async def recorded(session, astronaut, tmp_path):
    degraded, _ = degrade(astronaut, ["haze"], seed=1)
    _, trajectory = await restore(session, degraded, Explores(), name="astronaut.png")
    await save_record(session, trajectory, tmp_path / "trajectories", "astronaut")
    return tmp_path / "trajectories", trajectory


async def test_the_page_shows_every_step_in_order_with_its_tool_metrics_and_state(recorded):
    folder, trajectory = recorded
    page = restore_report(folder)
    steps = re.findall(r'class="step (\w+)" data-index="(\d+)" data-tool="([\w.]+)"', page)
    assert steps == [("kept", "0", "dehaze.dcp"), ("explored", "1", "denoise.nlm")]
    assert "explored, rolled back" in page and "kept the first step" in page
    for step in trajectory.steps:
        assert f"niqe {step.metrics['niqe']:.3g}" in page  # the metrics after each step
    assert page.count("data:image/jpeg;base64,") >= 2 + 2 + 3  # thumbnails, input and result, and the comparison
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script src" not in page  # nothing is fetched
    assert 'type="range"' in page  # the before/after slider


async def test_a_missing_run_is_named(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no trajectories found" in capsys.readouterr().err


def test_restore_writes_a_report_beside_its_output(tmp_path, astronaut, capsys):
    degraded, _ = degrade(astronaut, ["noise"], seed=2)
    write_image(degraded, tmp_path / "noisy.png")
    out = tmp_path / "out"
    assert main(["restore", str(tmp_path / "noisy.png"), "-o", str(out / "restored.png"), "--policy", "fixed", "--report", "--device", "cpu"]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    record = json.loads((out / "trajectories" / "noisy.json").read_text())
    page = (out / "report.html").read_text()
    assert all(f'data-tool="{s["task"]}.{s["model"]}"' in page for s in record["steps"]) and record["steps"]
    assert main(["report", str(out / "trajectories"), "-o", str(tmp_path / "again.html")]) == 0  # the command on its own


def chromium() -> str:
    """Debian's chromium, installed here where it is missing and can be (root, apt); otherwise the test is skipped."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no chromium, and no root apt-get to install it (apt-get install chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"], capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300)
        done = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"], capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0 or not shutil.which("chromium"):
        pytest.skip(f"chromium could not be installed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return shutil.which("chromium")


OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"]


async def test_a_headless_browser_renders_the_page_from_disk(recorded, tmp_path):
    folder, _ = recorded
    path = tmp_path / "report.html"
    path.write_text(restore_report(folder))
    browser = chromium()
    dom = subprocess.run([browser, *OFFLINE, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert re.findall(r'data-tool="([\w.]+)"', dom) == ["dehaze.dcp", "denoise.nlm"]
    assert dom.count("<img") >= 7
    shot = tmp_path / "report.png"
    subprocess.run([browser, *OFFLINE, f"--screenshot={shot}", "--window-size=1280,1100", path.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (1100, 1280) and image.std() > 10  # rendered, not a blank page


async def test_large_runs_link_their_images_beside_the_page(recorded, tmp_path):
    folder, _ = recorded
    page_path = tmp_path / "pages" / "report.html"
    page_path.parent.mkdir()
    page = restore_report(folder, out=page_path, embed=False)
    sources = re.findall(r'<img class="[^"]*" src="([^"]+)"', page)
    assert sources and "data:" not in page
    assert all((page_path.parent / s).is_file() for s in sources)  # relative to the page, so the folder can move whole
