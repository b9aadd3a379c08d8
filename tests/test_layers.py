"""The layering the README states, enforced: import-linter's contracts (pyproject.toml) over the package.

The top-level folders are mapped onto ``tiragent.*`` by the install, which import-linter cannot
follow, so the check runs on a copy of the sources laid out as the installed package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def package_tree(target: Path) -> Path:
    """The Python sources as the install maps them: ``server/`` becomes ``target/tiragent/server`` and so on."""
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    sources = shutil.ignore_patterns("__pycache__", "*.png", "*.safetensors", "*.json", "*.mat")
    shutil.copytree(REPO / "tiragent", target / "tiragent", ignore=sources)
    for package, folder in mapping.items():
        if package != "tiragent":
            shutil.copytree(REPO / folder, target / package.replace(".", "/"), ignore=sources, dirs_exist_ok=True)
    return target


def lint_imports(tmp_path: Path, config: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is missing: the test extra installs import-linter")
    env = {**os.environ, "PYTHONPATH": str(package_tree(tmp_path / "tree"))}
    return subprocess.run([exe, str(config), "--no-cache"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


def test_the_import_contracts_hold(tmp_path):
    result = lint_imports(tmp_path, REPO / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken" in result.stdout


def test_a_broken_contract_is_caught(tmp_path):
    """The check itself can fail: a contract that the code breaks (the CLI wires the server in) is reported."""
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "tiragent"\n'
        '[[tool.importlinter.contracts]]\nname = "cli without server"\ntype = "forbidden"\n'
        'source_modules = ["tiragent.cli"]\nforbidden_modules = ["tiragent.server"]\n'
    )
    result = lint_imports(tmp_path, config)
    assert result.returncode != 0 and "BROKEN" in result.stdout
