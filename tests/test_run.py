"""`tir-agent restore` end to end: files, folders, bad input and a server that dies mid-run."""

from __future__ import annotations

import json

import anyio
import numpy as np
import pytest

from tiragent.agent import run as run_module
from tiragent.cli import main
from tiragent.eval.degradations import degrade
from tiragent.images import read_image, write_image
from tiragent.server.app import ServerConfig
from tiragent.server.serve import http_app


@pytest.fixture
def photos(tmp_path):
    from skimage import data
    from skimage.transform import resize

    folder = tmp_path / "photos"
    for name, image in (("a.png", data.astronaut()), ("b.png", data.coffee())):
        image = resize(image, (256, 320), anti_aliasing=True).astype(np.float32)
        degraded, _ = degrade(image, ["noise"], seed=1, params={"noise": {"kind": "gaussian", "sigma": 30}})
        write_image(degraded, folder / name)
    return folder


def test_restore_one_image_with_trajectory(tmp_path, photos, capsys):
    out, traj = tmp_path / "out.png", tmp_path / "traj.json"
    assert main(["restore", str(photos / "a.png"), "-o", str(out), "--policy", "fixed", "--trajectory", str(traj)]) == 0
    assert read_image(out).shape == (256, 320, 3)
    record = json.loads(traj.read_text())
    assert record["policy"] == "fixed" and record["steps"] and record["steps"][0]["task"] == "denoise"
    assert "a.png ->" in capsys.readouterr().out


def test_restore_a_folder_reports_a_bad_file_and_restores_the_rest(tmp_path, photos, capsys):
    (photos / "broken.png").write_bytes(b"\x89PNG not really")
    out, trajs = tmp_path / "out", tmp_path / "trajs"
    status = main(["restore", str(photos), "-o", str(out), "--policy", "fixed", "--trajectory", str(trajs), "--max-steps", "2"])
    captured = capsys.readouterr()
    assert status == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert sorted(p.name for p in trajs.glob("*.json")) == ["a.json", "b.json"]
    assert {p.name for p in (trajs / "a").iterdir()} >= {"input.jpg", "result.jpg"}  # and the thumbnails, for `tir-agent report`
    assert "broken.png" in captured.err and "restored 2 of 3 images" in captured.out


def test_restore_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["restore", str(tmp_path / "empty"), "-o", str(tmp_path / "out")]) == 2
    assert "holds no images" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "missing.png"), "-o", str(tmp_path / "x.png")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "missing.png"), "-o", str(tmp_path / "x.png"), "--policy", "nope"]) == 2


def test_a_server_that_dies_mid_run_gives_a_clear_error_and_keeps_finished_outputs(tmp_path, photos, monkeypatch):
    import uvicorn
    from conftest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(http_app(ServerConfig(roots=[tmp_path]), host="127.0.0.1", token=None, max_body_mb=16),
                                           host="127.0.0.1", port=port, log_level="error"))  # fmt: skip
    real_restore = run_module.restore
    calls = 0
    stopped = anyio.Event()

    async def restore_then_kill(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:  # the server goes away before the second image
            server.should_exit = True
            await stopped.wait()
        return await real_restore(*args, **kwargs)

    monkeypatch.setattr(run_module, "restore", restore_then_kill)
    out = tmp_path / "out"

    async def scenario():
        async def serve() -> None:
            await server.serve()
            stopped.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            while not server.started:
                await anyio.sleep(0.05)
            with pytest.raises(run_module.ServerError, match=r"while restoring .*b.png; 1 finished image\(s\) are written"):
                await run_module.restore_cli(photos, out, policy="fixed", server=f"http://127.0.0.1:{port}/mcp", trajectory=None, max_steps=2)
            tg.cancel_scope.cancel()

    anyio.run(scenario)
    assert [p.name for p in out.iterdir()] == ["a.png"]
    assert np.isfinite(read_image(out / "a.png")).all()


def test_a_rerun_with_skip_existing_restores_only_what_is_missing(tmp_path, photos, capsys):
    out, trajs = tmp_path / "out", tmp_path / "trajs"
    args = ["restore", str(photos), "-o", str(out), "--policy", "fixed", "--trajectory", str(trajs), "--max-steps", "1"]
    assert main(args) == 0
    kept = (out / "a.png").stat().st_mtime_ns
    (out / "b.png").unlink()  # as if the batch had been killed before b was written
    capsys.readouterr()
    assert main([*args, "--skip-existing"]) == 0
    captured = capsys.readouterr()
    assert "skipping 1 image(s) already restored" in captured.err and "restored 1 of 1 images" in captured.out
    assert (out / "b.png").is_file() and (out / "a.png").stat().st_mtime_ns == kept
    assert main([*args, "--skip-existing"]) == 0 and "every image is already restored" in capsys.readouterr().out
