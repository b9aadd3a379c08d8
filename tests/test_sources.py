"""Official checkpoint sources: the manifest, verified downloads, and sha256 pins in tools configs."""

from __future__ import annotations

import hashlib

import pytest
import torch

from tiragent.cli import main
from tiragent.server.checkpoints import register_checkpoints
from tiragent.server.registry import get_tool, unregister
from tiragent.server.sources import ChecksumError, DownloadError, download, load_sources, verify_file
from tiragent.tasks import Task


def test_the_shipped_manifest_is_well_formed():
    sources = load_sources()
    assert len(sources) >= 10
    assert {s.task for s in sources.values()} >= {Task.SR, Task.DENOISE, Task.DEJPEG, Task.DERAIN, Task.MOTION_DEBLUR}
    for s in sources.values():
        assert s.url.startswith("https://") and s.licence and s.filename.endswith(".pth")
        assert s.sha256 == "" or (len(s.sha256) == 64 and int(s.sha256, 16) >= 0)
    assert sum(bool(s.sha256) for s in sources.values()) >= 8


@pytest.fixture
def published(tmp_path):
    """A random-weight DnCNN 'release' served from a file:// URL, and a manifest that pins it."""
    from spandrel.architectures.DnCNN import DnCNN

    torch.manual_seed(0)
    release = tmp_path / "release" / "dncnn_color.pth"
    release.parent.mkdir()
    torch.save(DnCNN(in_nc=3, out_nc=3, nc=8, nb=17).state_dict(), release)
    digest = hashlib.sha256(release.read_bytes()).hexdigest()
    manifest = tmp_path / "sources.toml"

    def write(sha256: str, size: int | None = release.stat().st_size, url: str = release.as_uri()) -> None:
        size_line = f"size = {size}\n" if size is not None else ""
        manifest.write_text(
            f'[[source]]\nname = "dncnn"\ntask = "denoise"\narch = "DnCNN"\nurl = "{url}"\nsha256 = "{sha256}"\n{size_line}licence = "MIT"\n'
        )
        return load_sources(manifest)["dncnn"]

    return release, digest, manifest, write


def test_download_verifies_and_keeps_a_good_file(published, tmp_path):
    release, digest, _, write = published
    path = download(write(digest), tmp_path / "ckpt", progress=False)
    assert path.read_bytes() == release.read_bytes()
    verify_file(path, digest)
    # Already there and valid: kept, not fetched again (the URL no longer works).
    assert download(write(digest, url=(tmp_path / "moved" / release.name).as_uri()), tmp_path / "ckpt", progress=False) == path


def test_a_wrong_checksum_leaves_nothing_behind(published, tmp_path):
    _, digest, _, write = published
    wrong = "0" * 64
    with pytest.raises(ChecksumError, match=f"expected {wrong}, downloaded {digest}"):
        download(write(wrong), tmp_path / "ckpt", progress=False)
    with pytest.raises(ChecksumError, match="expected 12 bytes"):
        download(write(digest, size=12), tmp_path / "ckpt", progress=False)
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_missing_pins_bad_digests_and_dead_urls(published, tmp_path):
    _, digest, _, write = published
    with pytest.raises(ChecksumError, match="no sha256 in the manifest"):
        download(write(""), tmp_path / "ckpt", progress=False)
    assert download(write("", size=None), tmp_path / "ckpt", sha256=digest, progress=False).is_file()
    with pytest.raises(ChecksumError, match="not a sha256 digest"):
        download(write("abc"), tmp_path / "other", progress=False)
    with pytest.raises(DownloadError, match="cannot download dncnn"):
        download(write(digest, url=(tmp_path / "nowhere.pth").as_uri()), tmp_path / "other", progress=False)
    assert not any((tmp_path / "other").iterdir())


def test_cli_download_then_serve_the_checkpoint(published, tmp_path, capsys):
    _, digest, manifest, write = published
    write(digest)
    assert main(["tools", "download", "dncnn", "--manifest", str(manifest), "--dir", str(tmp_path / "ckpt")]) == 0
    snippet = capsys.readouterr().out.split("\n\n", 1)[1]
    assert f'sha256 = "{digest}"' in snippet
    (tmp_path / "tools.toml").write_text(snippet)
    try:
        assert register_checkpoints(tmp_path / "tools.toml") == (["denoise.dncnn"], [])
        assert get_tool("denoise.dncnn").is_torch
    finally:
        unregister("denoise.dncnn")
    assert main(["tools", "download", "nope", "--manifest", str(manifest)]) == 2
    assert "no checkpoint source named 'nope'" in capsys.readouterr().err


def test_a_pinned_checkpoint_that_changed_is_refused_at_load(published, tmp_path):
    release, digest, _, _ = published
    (tmp_path / "tools.toml").write_text(
        f'[[tool]]\nname = "pinned"\ntask = "denoise"\ncheckpoint = "{release}"\nsha256 = "{"f" * 64}"\n'
        f'[[tool]]\nname = "fine"\ntask = "denoise"\ncheckpoint = "{release}"\nsha256 = "{digest}"\n'
    )
    try:
        registered, errors = register_checkpoints(tmp_path / "tools.toml")
        assert registered == ["denoise.fine"]
        assert len(errors) == 1 and "'pinned'" in errors[0] and "sha256 mismatch" in errors[0]
    finally:
        unregister("denoise.fine")


def test_cli_lists_sources_and_recipes(capsys):
    assert main(["tools", "sources"]) == 0
    out = capsys.readouterr().out
    assert "realesrgan_x4plus" in out and "4fa0d38905f7" in out and "(no sha256)" in out
    assert main(["tools", "recipes"]) == 0
    out = capsys.readouterr().out
    assert "denoise.unet" in out and "sr.srnet_x2" in out
