from __future__ import annotations

import json

import numpy as np
import pytest

from tiragent.errors import ImageError
from tiragent.eval.bench import load_manifest, make_benchmark
from tiragent.images import read_image, write_image


@pytest.fixture
def clean_dir(tmp_path, astronaut, coffee):
    folder = tmp_path / "clean"
    write_image(astronaut, folder / "astronaut.png")
    write_image(coffee, folder / "coffee.png")
    return folder


def test_make_benchmark_writes_pairs_and_manifest(tmp_path, clean_dir):
    out = tmp_path / "bench"
    items = make_benchmark(clean_dir, out, per_combo=2, seed=5, groups=["C"], progress=False)
    assert len(items) == 8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 5 and len(manifest["items"]) == 8
    first = manifest["items"][0]
    assert first["group"] == "C" and first["combination"] == ["haze", "motion", "lowres"]
    assert [s["degradation"] for s in first["steps"]] == ["haze", "motion", "lowres"]
    assert "beta" in first["steps"][0]["params"] and "angle" in first["steps"][1]["params"]
    for item in items:
        inp, tgt = read_image(out / "input" / item.name), read_image(out / "target" / item.name)
        if "lowres" in item.combination:
            assert inp.shape[0] * 4 == tgt.shape[0] and inp.shape[1] * 4 == tgt.shape[1]
        else:
            assert inp.shape == tgt.shape
    assert [i.name for i in load_manifest(out)] == [i.name for i in items]


def test_same_seed_same_pixels(tmp_path, clean_dir):
    make_benchmark(clean_dir, tmp_path / "a", per_combo=1, seed=1, groups=["A"], progress=False)
    make_benchmark(clean_dir, tmp_path / "b", per_combo=1, seed=1, groups=["A"], progress=False)
    make_benchmark(clean_dir, tmp_path / "c", per_combo=1, seed=2, groups=["A"], progress=False)
    names = sorted(p.name for p in (tmp_path / "a" / "input").iterdir())
    assert len(names) == 8
    same = [np.array_equal(read_image(tmp_path / "a" / "input" / n), read_image(tmp_path / "b" / "input" / n)) for n in names]
    other = [np.array_equal(read_image(tmp_path / "a" / "input" / n), read_image(tmp_path / "c" / "input" / n)) for n in names]
    assert all(same) and not all(other)


def test_empty_or_bad_arguments(tmp_path, clean_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no image files"):
        make_benchmark(tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="unknown group"):
        make_benchmark(clean_dir, tmp_path / "out", groups=["D"], progress=False)
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_manifest(tmp_path / "empty")


def test_out_of_domain_group_and_another_synthesis(tmp_path, clean_dir):
    from tiragent.eval.bench import OUT_OF_DOMAIN, all_combinations

    assert not set(OUT_OF_DOMAIN) & {c for _, c in all_combinations()}  # never among the 16 that training draws from
    calls = []

    def brighten(clean, combination, seed):
        calls.append((combination, seed))
        return np.clip(clean + 0.1, 0, 1), [{"name": n, "implementation": "test"} for n in combination]

    items = make_benchmark(clean_dir, tmp_path / "ood", per_combo=1, groups=["OOD"], progress=False, synthesis=brighten, protocol="test synthesis")
    assert [i.combination for i in items] == OUT_OF_DOMAIN and [c for c, _ in calls] == OUT_OF_DOMAIN
    manifest = json.loads((tmp_path / "ood" / "manifest.json").read_text())
    assert manifest["protocol"] == "test synthesis" and manifest["items"][0]["steps"][0]["implementation"] == "test"
    first = items[0]
    assert np.allclose(read_image(tmp_path / "ood" / "input" / first.name), np.clip(read_image(tmp_path / "ood" / "target" / first.name) + 0.1, 0, 1), atol=1 / 255)
