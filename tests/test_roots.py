from __future__ import annotations

import os

import pytest

from tiragent.errors import TirAgentError
from tiragent.server.roots import PathNotAllowedError, PathPolicy


@pytest.fixture
def tree(tmp_path):
    root, out, elsewhere = tmp_path / "root", tmp_path / "out", tmp_path / "elsewhere"
    for d in (root / "sub", out, elsewhere):
        d.mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"x")
    (elsewhere / "secret.png").write_bytes(b"x")
    os.symlink(elsewhere / "secret.png", root / "link.png")
    os.symlink(elsewhere, root / "linkdir")
    os.symlink(elsewhere, out / "escape")
    return root, out, elsewhere


def test_reads_inside_roots_only(tree):
    root, out, elsewhere = tree
    policy = PathPolicy([root], out)
    assert policy.readable("sub/a.png") == (root / "sub" / "a.png").resolve()
    assert policy.readable(str(root / "sub" / "a.png")).name == "a.png"
    for bad in ("../elsewhere/secret.png", str(elsewhere / "secret.png"), "link.png", "linkdir/secret.png", "sub/../../elsewhere/secret.png"):
        with pytest.raises(PathNotAllowedError, match="outside the allowed roots"):
            policy.readable(bad)
    with pytest.raises(PathNotAllowedError, match="no such file"):
        policy.readable("sub")
    with pytest.raises(PathNotAllowedError, match="invalid path"):
        policy.readable("a\x00b")


def test_writes_inside_the_output_root_only(tree):
    root, out, elsewhere = tree
    policy = PathPolicy([root], out)
    assert policy.writable("new/dir/x.png") == (out / "new" / "dir" / "x.png").resolve()
    for bad in ("../root/x.png", str(root / "x.png"), "escape/x.png", "."):
        with pytest.raises(PathNotAllowedError, match="outside the output root"):
            policy.writable(bad)
    assert not (elsewhere / "x.png").exists()


def test_default_output_root_is_the_first_root(tree):
    root, _, _ = tree
    assert PathPolicy([root]).write_root == root.resolve()
    with pytest.raises(TirAgentError, match="root folder\\(s\\) do not exist: .*missing"):
        PathPolicy([root / "missing"])
