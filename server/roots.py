"""Which files the server may read and write: paths resolve inside configured roots only.

Relative paths are taken relative to the first root. ``..`` segments, absolute paths
outside the roots and symlinks that lead outside them are all refused, because the
check is made on the fully resolved path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tiragent.errors import TirAgentError


class PathNotAllowedError(TirAgentError, PermissionError):
    pass


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


@dataclass
class PathPolicy:
    read_roots: list[Path] = field(default_factory=lambda: [Path.cwd()])
    write_root: Path | None = None

    def __post_init__(self) -> None:
        if not self.read_roots:
            raise ValueError("at least one root folder is needed")
        missing = [str(r) for r in self.read_roots if not Path(r).expanduser().is_dir()]
        if missing:
            raise TirAgentError(f"root folder(s) do not exist: {', '.join(missing)}")
        self.read_roots = [Path(r).expanduser().resolve() for r in self.read_roots]
        self.write_root = Path(self.write_root).expanduser().resolve() if self.write_root else self.read_roots[0]

    def _resolve(self, path: str, base: Path) -> Path:
        if not path or "\x00" in path:
            raise PathNotAllowedError(f"invalid path {path!r}")
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = base / candidate
        return candidate.resolve()

    def readable(self, path: str) -> Path:
        """The resolved path of an existing file inside a read root."""
        resolved = self._resolve(path, self.read_roots[0])
        if not any(_inside(resolved, root) for root in self.read_roots):
            roots = ", ".join(str(r) for r in self.read_roots)
            raise PathNotAllowedError(f"{path!r} is outside the allowed roots ({roots})")
        if not resolved.is_file():
            raise PathNotAllowedError(f"{path!r}: no such file inside the allowed roots")
        return resolved

    def writable(self, path: str) -> Path:
        """The resolved path of a file to write inside the output root (its folders are created)."""
        assert self.write_root is not None
        resolved = self._resolve(path, self.write_root)
        if not _inside(resolved, self.write_root) or resolved == self.write_root:
            raise PathNotAllowedError(f"{path!r} is outside the output root ({self.write_root})")
        resolved.parent.mkdir(parents=True, exist_ok=True)
        # A symlinked parent created by someone else could still point out: check again.
        if not _inside(resolved.parent.resolve(), self.write_root):
            raise PathNotAllowedError(f"{path!r} is outside the output root ({self.write_root})")
        return resolved
