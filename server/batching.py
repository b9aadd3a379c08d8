"""Dynamic batching with the list-in/list-out semantics of Ray Serve's ``@serve.batch``.

Callers ``await f(item)`` one item at a time; the decorated ``async def f(self, items)``
receives up to ``max_batch_size`` items gathered within ``batch_wait_timeout_s`` of the
first, and returns one result per item in the same order. Up to ``max_concurrent_batches``
batches are handed to the handler at once (as in Ray Serve): with 2, the next batch is
formed and waiting while one runs, so a device thread never idles between batches. If it raises, every caller
in that batch gets the exception (as in Ray); it may also return an exception instance
at a position, which fails that one caller alone. A caller cancelled while waiting is
dropped before its batch runs.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Pending(Generic[T]):
    item: T
    future: asyncio.Future[Any]


class BatchQueue(Generic[T, R]):
    """A queue that hands its items to ``handler`` in batches, one batch at a time."""

    def __init__(
        self,
        handler: Callable[[list[T]], Awaitable[list[R | BaseException]]],
        *,
        max_batch_size: int = 8,
        batch_wait_timeout_s: float = 0.005,
        max_concurrent_batches: int = 1,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        if max_concurrent_batches < 1:
            raise ValueError(f"max_concurrent_batches must be at least 1, not {max_concurrent_batches}")
        self.handler = handler
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.max_concurrent_batches = max_concurrent_batches
        self._queue: asyncio.Queue[_Pending[T]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _ensure_worker(self) -> asyncio.Queue[_Pending[T]]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done() or self._loop is not loop:
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue), name="batch-queue")
        return self._queue

    async def submit(self, item: T) -> R:
        queue = self._ensure_worker()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Pending(item, future))
        return await future

    def qsize(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    async def _collect(self, queue: asyncio.Queue[_Pending[T]]) -> list[_Pending[T]]:
        batch = [await queue.get()]
        deadline = time.perf_counter() + self.batch_wait_timeout_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                while len(batch) < self.max_batch_size and not queue.empty():
                    batch.append(queue.get_nowait())
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return [p for p in batch if not p.future.done()]

    async def _run(self, queue: asyncio.Queue[_Pending[T]]) -> None:
        slots = asyncio.Semaphore(self.max_concurrent_batches)
        running: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()

        try:
            while True:
                await slots.acquire()
                batch = await self._collect(queue)
                if not batch:
                    slots.release()
                    continue
                task = asyncio.get_running_loop().create_task(self._handle(batch), name="batch")
                running.add(task)
                task.add_done_callback(finished)
        finally:
            for task in list(running):
                task.cancel()

    async def _handle(self, batch: list[_Pending[T]]) -> None:
        try:
            results = await self.handler([p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch handler returned {len(results)} results for {len(batch)} inputs")
        except asyncio.CancelledError:
            for p in batch:
                if not p.future.done():
                    p.future.cancel()
            raise
        except Exception as err:  # noqa: BLE001 - forwarded to every caller of the batch
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(err)
            return
        for p, result in zip(batch, results):
            if p.future.done():
                continue
            if isinstance(result, BaseException):
                p.future.set_exception(result)
            else:
                p.future.set_result(result)

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker = None


def batch(
    _fn: Callable[..., Awaitable[list[Any]]] | None = None,
    *,
    max_batch_size: int = 8,
    batch_wait_timeout_s: float = 0.005,
) -> Any:
    """Decorate ``async def f(items: list) -> list`` (or a method ``f(self, items)``) so that callers pass one item.

    Each instance (or the function itself) gets its own queue; ``wrapper.queue_for(self)``
    returns it, e.g. to change ``max_batch_size`` at run time.
    """

    def decorator(fn: Callable[..., Awaitable[list[Any]]]) -> Any:
        queues: weakref.WeakKeyDictionary[Any, BatchQueue[Any, Any]] = weakref.WeakKeyDictionary()
        plain: dict[None, BatchQueue[Any, Any]] = {}

        def queue_for(owner: Any = None) -> BatchQueue[Any, Any]:
            if owner is None:
                if None not in plain:
                    plain[None] = BatchQueue(fn, max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)
                return plain[None]
            if owner not in queues:
                queues[owner] = BatchQueue(
                    functools.partial(fn, owner), max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s
                )
            return queues[owner]

        @functools.wraps(fn)
        async def wrapper(*args: Any) -> Any:
            if len(args) == 1:
                return await queue_for(None).submit(args[0])
            owner, item = args
            return await queue_for(owner).submit(item)

        wrapper.queue_for = queue_for  # type: ignore[attr-defined]
        return wrapper

    return decorator(_fn) if _fn is not None else decorator
