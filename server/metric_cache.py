"""Quality metrics already computed, by image id: ``assess_quality`` never scores the same pixels twice.

Image ids are content hashes, so a metric of ``(image_id, reference_id)`` never goes stale. Many
clients ask for the same scores: an RL group's rollouts often reach the same image (the same tool
on the same input), and an agent re-assesses images it has seen. Concurrent requests for the
same pair wait for one computation instead of each running it. Bounded, least recently used first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

import anyio

Key = tuple[str, str | None, str]
SKIPPED = float("nan")
"""Stored for a metric undefined at the image's size, so that it is not tried again."""


class MetricCache:
    def __init__(self, max_entries: int = 65536) -> None:
        self.max_entries = max_entries
        self._values: OrderedDict[Key, float] = OrderedDict()
        self._locks: dict[tuple[str, str | None], tuple[anyio.Lock, int]] = {}
        self.hits = self.misses = 0

    def _get(self, key: Key) -> float | None:
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    async def scores(
        self,
        image_id: str,
        reference_id: str | None,
        names: list[str],
        full_reference: Callable[[str], bool],
        compute: Callable[[list[str]], Awaitable[dict[str, float]]],
    ) -> dict[str, float]:
        """The metrics ``names`` of the image (against the reference for full-reference ones); ``compute`` is given the
        names not known yet and returns those defined at the image's size."""
        pair = (image_id, reference_id)
        lock, users = self._locks.get(pair, (anyio.Lock(), 0))
        self._locks[pair] = (lock, users + 1)
        try:
            async with lock:
                key = lambda name: (image_id, reference_id if full_reference(name) else None, name)  # noqa: E731
                values = {n: v for n in names if (v := self._get(key(n))) is not None}
                missing = [n for n in names if n not in values]
                self.hits += len(values)
                self.misses += len(missing)
                if missing:
                    computed = await compute(missing)
                    for name in missing:
                        values[name] = self._values[key(name)] = computed.get(name, SKIPPED)
                    while len(self._values) > self.max_entries:
                        self._values.popitem(last=False)
        finally:
            lock, users = self._locks[pair]
            if users == 1:
                del self._locks[pair]
            else:
                self._locks[pair] = (lock, users - 1)
        return {n: values[n] for n in names if values[n] == values[n]}  # NaN: undefined at this size

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._values), "hits": self.hits, "misses": self.misses}
