"""A content-addressed image store shared by every session of a server.

Images are float32 RGB arrays; an image's id is a hash of its pixels, so storing the
same result twice costs nothing and ids are stable across sessions. The store keeps the
most recently used images in memory up to a byte budget and spills the rest to disk
(``.npy``, exact), from where they are read back on demand. The spill folder has its own
byte budget: past it, the least recently used spilled images are deleted, and a later call
on one of their ids says that the image expired.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from tiragent.errors import TirAgentError
from tiragent.images import write_atomically


class UnknownImageError(TirAgentError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class StoredImage:
    image_id: str
    width: int
    height: int


def image_id_for(image: np.ndarray, *, secure: bool = False) -> str:
    """``img_`` + a 96-bit hash of shape and pixels: xxh3 (0.04 ms for 512x512, 50x faster than
    blake2b), or SHA-256 for the rare image whose fast hash collides with a different one."""
    header = str(image.shape).encode()
    if secure:
        return "img_s" + hashlib.sha256(header + image.tobytes()).hexdigest()[:23]
    digest = xxhash.xxh3_128(header)
    digest.update(image.data)
    return "img_" + digest.hexdigest()[:24]


EXPIRED_IDS_KEPT = 1_000_000
"""How many deleted ids the store remembers, to tell 'expired' from 'never existed' (about 100 MB at most)."""


class ImageStore:
    """Thread-safe; ``put`` and ``get`` may touch the disk, so call them off the event loop for big images."""

    def __init__(self, memory_budget_mb: float = 1024, spill_dir: str | Path | None = None, disk_budget_mb: float = 10240) -> None:
        self.budget_bytes = int(memory_budget_mb * 2**20)
        self.disk_budget_bytes = int(disk_budget_mb * 2**20)
        self._tmp = None if spill_dir is not None else tempfile.TemporaryDirectory(prefix="tir-agent-store-")
        self.spill_dir = Path(spill_dir if spill_dir is not None else self._tmp.name)  # type: ignore[union-attr]
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        # spilled images, least recently used first, with their file sizes (a reused folder: oldest file first)
        found = sorted(((p, p.stat()) for p in self.spill_dir.glob("img_*.npy")), key=lambda f: f[1].st_mtime)
        self._on_disk: OrderedDict[str, int] = OrderedDict((p.stem, info.st_size) for p, info in found)
        self._expired: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.memory_bytes = 0
        self.disk_bytes = sum(self._on_disk.values())
        self.spills = 0
        self.deleted = 0
        with self._lock:
            self._trim_disk()

    def __contains__(self, image_id: str) -> bool:
        with self._lock:
            return image_id in self._memory or image_id in self._on_disk

    def __len__(self) -> int:
        with self._lock:
            return len(set(self._memory) | set(self._on_disk))

    def put(self, image: np.ndarray) -> StoredImage:
        image = np.ascontiguousarray(image, dtype=np.float32)
        image.setflags(write=False)
        image_id = image_id_for(image)
        with self._lock:
            if image_id in self._memory or image_id in self._on_disk:
                try:
                    known = self._load(image_id)
                except UnknownImageError:  # its spilled copy is damaged: this put stores it again
                    self.disk_bytes -= self._on_disk.pop(image_id)
                    known = image
                if not np.array_equal(known, image):  # a fast-hash collision: never alias two images
                    image_id = image_id_for(image, secure=True)
            self._expired.pop(image_id, None)
            if image_id in self._memory:
                self._memory.move_to_end(image_id)
            else:
                self._memory[image_id] = image
                self.memory_bytes += image.nbytes
                self._spill_over_budget(keep=image_id)
        return StoredImage(image_id, image.shape[1], image.shape[0])

    def get(self, image_id: str) -> np.ndarray:
        with self._lock:
            if image_id in self._memory:
                self._memory.move_to_end(image_id)
                return self._memory[image_id]
            if image_id in self._expired:
                raise UnknownImageError(
                    f"image_id {image_id!r} has expired: the store deleted it to stay within its disk budget "
                    "(--store-disk-mb); load the image again, or restore it again from an earlier id"
                )
            if image_id not in self._on_disk:
                raise UnknownImageError(
                    f"unknown image_id {image_id!r}: load the image with load_image first (ids come from load_image and restoration results)"
                )
            self._on_disk.move_to_end(image_id)
            image = self._load(image_id)
            self._memory[image_id] = image
            self.memory_bytes += image.nbytes
            self._spill_over_budget(keep=image_id)
            return image

    def _load(self, image_id: str) -> np.ndarray:
        if image_id in self._memory:
            return self._memory[image_id]
        path = self.spill_dir / f"{image_id}.npy"
        try:
            image = np.load(path)
        except (OSError, ValueError, EOFError) as err:  # a damaged file in a reused folder: name it, never serve part of it
            raise UnknownImageError(f"image_id {image_id!r}: its spilled copy {path} is unreadable ({err}); load the image again") from None
        image.setflags(write=False)
        return image

    def _spill_over_budget(self, keep: str) -> None:
        while self.memory_bytes > self.budget_bytes and len(self._memory) > 1:
            oldest = next(iter(self._memory))
            if oldest == keep:
                break
            image = self._memory.pop(oldest)
            self.memory_bytes -= image.nbytes
            if oldest not in self._on_disk:
                self._write_spill(oldest, image)
        self._trim_disk()

    def _write_spill(self, image_id: str, image: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, image)
        data = buffer.getvalue()
        write_atomically(self.spill_dir / f"{image_id}.npy", data)  # a crash mid-spill leaves no truncated image
        self._on_disk[image_id] = len(data)
        self.disk_bytes += len(data)
        self.spills += 1

    def _trim_disk(self) -> None:
        """Delete the least recently used spilled images past the disk budget (never one held in memory)."""
        for image_id in list(self._on_disk):
            if self.disk_bytes <= self.disk_budget_bytes:
                return
            if image_id in self._memory:
                continue
            self.disk_bytes -= self._on_disk.pop(image_id)
            (self.spill_dir / f"{image_id}.npy").unlink(missing_ok=True)
            self.deleted += 1
            self._expired[image_id] = None
            if len(self._expired) > EXPIRED_IDS_KEPT:
                self._expired.popitem(last=False)

    def stats(self) -> dict[str, float]:
        with self._lock:
            return {
                "images": len(set(self._memory) | set(self._on_disk)),
                "in_memory": len(self._memory),
                "memory_mb": self.memory_bytes / 2**20,
                "on_disk": len(self._on_disk),
                "disk_mb": self.disk_bytes / 2**20,
                "disk_budget_mb": self.disk_budget_bytes / 2**20,
                "spills": self.spills,
                "deleted": self.deleted,
            }

    def close(self) -> None:
        """A store in a folder of the user's keeps what it holds in memory there too (within the disk budget), so that a
        server restarted on the folder finds every image; a temporary folder is removed."""
        if self._tmp is not None:
            self._tmp.cleanup()
            return
        with self._lock:
            for image_id, image in list(self._memory.items()):  # least recently used first
                if image_id not in self._on_disk:
                    self._write_spill(image_id, image)
            self._memory.clear()
            self.memory_bytes = 0
            self._trim_disk()
