"""Official checkpoint sources and a verified downloader: ``tir-agent tools download NAME``.

The manifest (``data/checkpoint_sources.toml``) gives each checkpoint's release URL, sha256,
size and licence. A download streams to ``NAME.part`` while hashing, and only a file whose
sha256 (and size, when known) match is renamed into place; anything else is deleted and
reported. The result plugs into a tools config (``tir-agent serve --tools-config``).
"""

from __future__ import annotations

import hashlib
import tomllib
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tqdm.auto import tqdm

from tiragent.errors import TirAgentError, ToolNotFoundError, did_you_mean
from tiragent.tasks import TASK_NAMES, Task, is_task

CHUNK = 1 << 20


class ChecksumError(TirAgentError, ValueError):
    pass


class DownloadError(TirAgentError, OSError):
    pass


@dataclass(frozen=True)
class Source:
    name: str
    task: Task
    arch: str
    url: str
    sha256: str
    licence: str
    homepage: str = ""
    size: int | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1].split("?", 1)[0]


def default_manifest() -> Path:
    return Path(str(resources.files("tiragent.server") / "data" / "checkpoint_sources.toml"))


def load_sources(path: str | Path | None = None) -> dict[str, Source]:
    path = Path(path) if path is not None else default_manifest()
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise TirAgentError(f"{path}: cannot read the checkpoint manifest ({err})") from None
    entries = raw.get("source", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise TirAgentError(f"{path}: 'source' must be an array of tables ([[source]] entries)")
    fields = set(Source.__dataclass_fields__)
    sources = {}
    for i, entry in enumerate(entries, start=1):
        name = entry.get("name", f"number {i}")
        missing = [k for k in ("name", "task", "arch", "url", "sha256", "licence") if k not in entry]
        if missing:
            raise TirAgentError(f"{path}: source {name!r} lacks {', '.join(missing)}")
        unknown = sorted(set(entry) - fields)
        if unknown:
            raise TirAgentError(f"{path}: source {name!r} has unknown field {', '.join(map(repr, unknown))}; fields: {', '.join(sorted(fields))}")
        if not is_task(entry["task"]):
            raise TirAgentError(f"{path}: source {name!r} has unknown task {entry['task']!r}; tasks: {', '.join(TASK_NAMES)}")
        if entry.get("size") is not None and not isinstance(entry["size"], int):
            raise TirAgentError(f"{path}: source {name!r} has a size that is not a whole number of bytes: {entry['size']!r}")
        sources[entry["name"]] = Source(**{**entry, "task": Task(entry["task"])})
    return sources


def get_source(name: str, path: str | Path | None = None) -> Source:
    sources = load_sources(path)
    if name not in sources:
        raise ToolNotFoundError(f"no checkpoint source named {name!r}: {did_you_mean(name, list(sources))}")
    return sources[name]


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | Path, sha256: str, size: int | None = None) -> None:
    """Raise ChecksumError naming both digests (or sizes) unless the file matches."""
    path = Path(path)
    if size is not None and path.stat().st_size != size:
        raise ChecksumError(f"{path.name}: expected {size} bytes, the file has {path.stat().st_size}")
    actual = sha256_of(path)
    if actual != sha256.lower():
        raise ChecksumError(f"{path.name}: sha256 mismatch: expected {sha256.lower()}, the file has {actual}")


def download(source: Source, directory: str | Path, *, sha256: str | None = None, progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch one checkpoint into ``directory`` and verify it; returns its path.

    ``sha256`` overrides (or supplies) the manifest's digest. A file already there that
    verifies is kept without downloading again.
    """
    expected = (sha256 or source.sha256).lower()
    if not expected:
        raise ChecksumError(f"{source.name} has no sha256 in the manifest; pass --sha256 with the digest its authors publish")
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ChecksumError(f"{expected!r} is not a sha256 digest (64 hex digits)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / source.filename
    size = source.size if sha256 is None else None
    if target.is_file():
        try:
            verify_file(target, expected, size)
            return target
        except ChecksumError:
            pass  # a stale or damaged copy: fetch it again
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(source.url, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or source.size
            with tqdm(total=total, unit="B", unit_scale=True, desc=source.filename, disable=not progress) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except OSError as err:  # URLError, timeouts and refused connections are all OSErrors
        partial.unlink(missing_ok=True)
        raise DownloadError(f"cannot download {source.name} from {source.url}: {getattr(err, 'reason', err)}") from None
    try:
        if size is not None and partial.stat().st_size != size:
            raise ChecksumError(f"{source.filename}: expected {size} bytes, downloaded {partial.stat().st_size}")
        if digest.hexdigest() != expected:
            raise ChecksumError(f"{source.filename}: sha256 mismatch: expected {expected}, downloaded {digest.hexdigest()}")
    except ChecksumError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return target


def config_snippet(source: Source, path: Path, sha256: str) -> str:
    """The ``[[tool]]`` entry that serves a downloaded checkpoint (``serve --tools-config``)."""
    return f'[[tool]]\nname = "{source.name}"\ntask = "{source.task.value}"\ncheckpoint = "{path}"\nsha256 = "{sha256}"\n'
