"""What the README's benchmark numbers rest on: `bench pairs`, `tir-agent eval` and its report files, and the
degradation detector's outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mcp import Client

from tiragent.cli import main
from tiragent.eval.degradations import degrade
from tiragent.images import encode_image, read_image, write_image
from tiragent.server.app import ServerConfig, build_server
from tiragent.server.perception import detect
from tiragent.tasks import TASK_OF_DEGRADATION

pytestmark = pytest.mark.anyio


@pytest.fixture
def pairs(tmp_path, astronaut, coffee):
    noisy, clean = tmp_path / "noisy", tmp_path / "clean"
    for i, photo in enumerate((astronaut, coffee[:, :128])):
        degraded, _ = degrade(photo, ["noise"], seed=i, params={"noise": {"kind": "gaussian", "sigma": 25}})
        write_image(degraded, noisy / f"{i}_real.png")
        write_image(photo, clean / f"{i}_mean.png")
    return noisy, clean


def test_bench_pairs_makes_a_benchmark_of_real_pairs(tmp_path, pairs, capsys):
    noisy, clean = pairs
    out = tmp_path / "bench"
    assert main(["bench", "pairs", "--input", str(noisy), "--target", str(clean), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["name"] for i in manifest["items"]] == ["real_0_real.png", "real_1_real.png"]
    assert all(i["combination"] == ["noise"] and i["group"] == "real" for i in manifest["items"])
    assert np.array_equal(read_image(out / "input" / "real_0_real.png"), read_image(noisy / "0_real.png"))
    assert np.array_equal(read_image(out / "target" / "real_1_real.png"), read_image(clean / "1_mean.png"))
    (clean / "1_mean.png").unlink()
    assert main(["bench", "pairs", "--input", str(noisy), "--target", str(clean), "--out", str(tmp_path / "b2")]) == 2
    assert "must pair up one to one" in capsys.readouterr().err


def test_eval_writes_the_tables_the_plot_and_every_record(tmp_path, pairs, capsys):
    noisy, clean = pairs
    bench = tmp_path / "bench"
    main(["bench", "pairs", "--input", str(noisy), "--target", str(clean), "--out", str(bench)])
    out = tmp_path / "eval"
    assert main(["eval", "--bench", str(bench), "--policy", "fixed", "--policy", "oracle", "--out", str(out), "--device", "cpu"]) == 0
    records = json.loads((out / "results.json").read_text())
    records = records["records"] if isinstance(records, dict) else records
    by_policy = {p: [r for r in records if r["policy"] == p] for p in ("input", "fixed", "oracle")}
    assert all(len(rows) == 2 for rows in by_policy.values())
    for r in by_policy["oracle"]:
        assert r["psnr"] >= next(i["psnr"] for i in by_policy["input"] if i["name"] == r["name"]) - 1e-6  # never worse than the input
        assert set(r["calls_by_cost"]) <= {"low", "medium"} and sum(r["calls_by_cost"].values()) == r["tool_calls"]  # no high-cost tool
    table = (out / "results.md").read_text()
    assert "| fixed |" in table and "| oracle |" in table and "| input |" in table
    mean_oracle = np.mean([r["psnr"] for r in by_policy["oracle"]])
    assert f"{mean_oracle:.2f}" in table  # the table is the mean of the records
    assert (out / "quality_vs_calls.png").stat().st_size > 1000
    assert str(out / "results.md") in capsys.readouterr().out
    page = (out / "report.html").read_text()  # the tables, the plot, and each policy's images behind its row's link
    assert page.count("<table>") == 1 and '<a href="#policy-oracle">oracle</a>' in page and 'id="policy-oracle"' in page
    assert page.count('class="image"') == 4  # fixed and oracle, two images each, with their steps
    assert all(f'data-tool="{key}"' in page for r in by_policy["oracle"] for key in r["path"])


def test_the_detector_reads_what_was_done_to_an_image():
    from skimage import data
    from skimage.transform import resize

    photo = resize(data.astronaut(), (256, 256), anti_aliasing=True).astype(np.float32)
    clean = detect(photo)
    assert set(clean) == set(TASK_OF_DEGRADATION) and all(0 <= p < 0.5 for p in clean.values()), clean  # nothing is present
    strong = {
        "noise": {"kind": "gaussian", "sigma": 25},
        "rain": {"length": 36, "angle": 26.0, "density": 50.0},
        "defocus": {"radius": 6},
        "dark": {"mode": "max", "max_value": 147},
    }
    for name, params in strong.items():
        seen = detect(degrade(photo, [name], seed=0, params={name: params})[0])
        assert seen[name] > 0.5 and seen[name] > clean[name] + 0.3, (name, seen)
    assert detect(photo) == clean  # deterministic


async def test_the_detector_over_mcp_keys_its_answer_by_task(tmp_path, astronaut):
    import base64

    noisy, _ = degrade(astronaut, ["noise"], seed=0, params={"noise": {"kind": "gaussian", "sigma": 50}})
    async with Client(build_server(ServerConfig(roots=[tmp_path], preview_size=0))) as client:
        loaded = await client.call_tool("load_image", {"data": base64.b64encode(encode_image(noisy)).decode()})
        result = (await client.call_tool("detect_degradations", {"image_id": loaded.structured_content["image_id"]})).structured_content
    assert set(result["tasks"]) == set(TASK_OF_DEGRADATION.values()) and "denoise" in result["present"]
    assert result["present"] == sorted(result["present"], key=lambda t: -result["tasks"][t])
    assert all(result["tasks"][TASK_OF_DEGRADATION[d]] == p for d, p in result["degradations"].items())


def test_niqe_of_a_flat_image_is_a_named_error_not_a_crash():
    from tiragent.errors import ImageError
    from tiragent.eval.metrics import evaluate

    with pytest.raises(ImageError, match="niqe is undefined on this image"):
        evaluate(np.full((128, 128, 3), 0.5, np.float32), None, ["niqe"])


@pytest.mark.anyio
async def test_assess_quality_of_a_flat_image_answers_a_tool_error(tmp_path):
    import base64

    async with Client(build_server(ServerConfig(roots=[tmp_path], preview_size=0))) as client:
        data = base64.b64encode(encode_image(np.full((128, 128, 3), 0.5, np.float32), "png")).decode()
        image_id = (await client.call_tool("load_image", {"data": data})).structured_content["image_id"]
        result = await client.call_tool("assess_quality", {"image_id": image_id, "metrics": ["niqe"]})
        assert result.is_error and "niqe is undefined on this image" in result.content[0].text
        ok = await client.call_tool("assess_quality", {"image_id": image_id, "metrics": ["piqe"]})  # the server goes on
        assert not ok.is_error
