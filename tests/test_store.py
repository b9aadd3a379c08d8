from __future__ import annotations

import numpy as np
import pytest

from tiragent.server import store as store_module
from tiragent.server.store import ImageStore, UnknownImageError, image_id_for


def img(value: float, size: int = 64) -> np.ndarray:
    return np.full((size, size, 3), value, np.float32)


def test_content_addressed_ids(tmp_path):
    store = ImageStore(spill_dir=tmp_path)
    a, b = store.put(img(0.1)), store.put(img(0.1).copy())
    assert a.image_id == b.image_id and len(store) == 1
    assert store.put(img(0.2)).image_id != a.image_id
    assert image_id_for(img(0.1, 32)) != image_id_for(img(0.1, 32).reshape(16, 64, 3))  # shape is part of the id
    assert (a.width, a.height) == (64, 64)


def test_stored_images_are_read_only(tmp_path):
    store = ImageStore(spill_dir=tmp_path)
    ref = store.put(img(0.3))
    with pytest.raises(ValueError):
        store.get(ref.image_id)[0, 0, 0] = 1.0


def test_spills_to_disk_over_budget_and_reads_back(tmp_path):
    one_mb = 1024 * 1024
    store = ImageStore(memory_budget_mb=0.1, spill_dir=tmp_path)  # a 64x64x3 float image is 48 KB
    ids = [store.put(img(v / 10)).image_id for v in range(5)]
    stats = store.stats()
    assert stats["images"] == 5 and stats["in_memory"] == 2 and stats["on_disk"] == 3 and stats["memory_mb"] * one_mb <= 0.1 * one_mb
    for v, image_id in enumerate(ids):
        assert np.array_equal(store.get(image_id), img(v / 10))
    # A new store on the same folder finds the spilled images (they survive a restart).
    again = ImageStore(spill_dir=tmp_path)
    assert ids[0] in again


def test_unknown_id_is_a_clear_error(tmp_path):
    with pytest.raises(UnknownImageError, match="unknown image_id 'img_x': load the image with load_image first"):
        ImageStore(spill_dir=tmp_path).get("img_x")


def test_a_fast_hash_collision_never_aliases_two_images(tmp_path, monkeypatch):
    real = store_module.image_id_for
    monkeypatch.setattr(store_module, "image_id_for", lambda image, secure=False: real(image, secure=True) if secure else "img_same")
    store = ImageStore(spill_dir=tmp_path)
    first, second = store.put(img(0.1)), store.put(img(0.9))
    assert first.image_id == "img_same" and second.image_id.startswith("img_s") and second.image_id != "img_same"
    assert store.get(first.image_id)[0, 0, 0] == pytest.approx(0.1)
    assert store.get(second.image_id)[0, 0, 0] == pytest.approx(0.9)


def test_the_spill_folder_stays_within_its_disk_budget(tmp_path):
    file_kb = 48 + 0.125  # a 64x64x3 float32 .npy: 48 KB of pixels and a 128-byte header
    store = ImageStore(memory_budget_mb=0.1, spill_dir=tmp_path, disk_budget_mb=4 * file_kb / 1024)  # 2 in memory, 4 on disk
    ids = [store.put(img(v / 100)).image_id for v in range(6)]
    assert store.stats()["deleted"] == 0
    store.get(ids[0])  # read back from disk: now the most recently used, so it outlives images 1 and 2
    for v in range(6, 8):
        store.put(img(v / 100))
    files = list(tmp_path.glob("img_*.npy"))
    assert sum(f.stat().st_size for f in files) <= 4 * file_kb * 1024 and len(files) == 4
    stats = store.stats()
    assert stats["deleted"] == 2 and stats["disk_mb"] <= stats["disk_budget_mb"]
    assert np.array_equal(store.get(ids[0]), img(0.0))
    for gone in ids[1:3]:
        with pytest.raises(UnknownImageError, match=f"image_id '{gone}' has expired.*disk budget"):
            store.get(gone)
    with pytest.raises(UnknownImageError, match="unknown image_id 'img_never'"):
        store.get("img_never")
    assert store.put(img(0.01)).image_id == ids[1] and np.array_equal(store.get(ids[1]), img(0.01))  # an expired image may come back


def test_a_reused_spill_folder_is_trimmed_to_the_budget_at_start(tmp_path):
    store = ImageStore(memory_budget_mb=0.05, spill_dir=tmp_path)
    for v in range(6):
        store.put(img(v / 10))
    assert len(list(tmp_path.glob("img_*.npy"))) == 5
    ImageStore(spill_dir=tmp_path, disk_budget_mb=0.1)
    assert len(list(tmp_path.glob("img_*.npy"))) == 2


def test_a_damaged_spilled_copy_is_named_and_a_put_repairs_it(tmp_path):
    store = ImageStore(memory_budget_mb=0.05, spill_dir=tmp_path)
    first = store.put(img(0.1)).image_id
    store.put(img(0.2))  # spills the first
    path = tmp_path / f"{first}.npy"
    path.write_bytes(path.read_bytes()[:1000])  # as a crash of an older, non-atomic server left it
    again = ImageStore(memory_budget_mb=0.05, spill_dir=tmp_path)
    with pytest.raises(UnknownImageError, match=f"image_id '{first}': its spilled copy .* is unreadable"):
        again.get(first)
    assert again.put(img(0.1)).image_id == first and np.array_equal(again.get(first), img(0.1))


def test_spills_and_saved_images_are_written_atomically(tmp_path, monkeypatch):
    import os

    from tiragent.images import read_image, write_image

    target = tmp_path / "out.png"
    write_image(img(0.25), target)
    real_replace = os.replace

    def crash(*args):  # the process dies between writing the temporary file and the rename
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        write_image(img(0.75), target)
    monkeypatch.setattr(os, "replace", real_replace)
    assert np.allclose(read_image(target), 0.25, atol=1 / 255)  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # and no partial file beside it
