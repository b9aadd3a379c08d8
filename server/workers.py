"""Worker processes for tools whose native code may crash: a crash fails that one call, not the server.

A tool registered with ``isolated=True`` runs in one of a few long-lived worker processes,
one call per worker at a time. When a worker dies (a native assertion, a segfault,
``os.abort()``), the call it was running fails with an error that says so, the worker is
replaced on the next call, and every other call (in other workers, on the CPU threads or on
the device) goes on. A call that times out or is cancelled kills its worker, so the work
really stops, which a thread cannot promise.

A worker is a fresh interpreter (``python -m tiragent.server.workers``), not a fork of the
server, so it holds none of the server's threads or locks and never re-runs the caller's
main script. Calls and results travel pickled over a pair of pipes; the tool function
travels by reference, so it must be a module-level function importable from ``sys.path``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from tiragent.errors import ToolExecutionError


def _serve(calls: Connection, results: Connection) -> None:
    """The worker's loop: receive ``(fn, image, params)``, send back ``("ok", result)`` or ``("error", message)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's Ctrl-C is the server's to handle
    while True:
        try:
            fn, image, params = calls.recv()
        except (EOFError, OSError):
            return  # the server closed the pipe or went away
        except Exception as err:  # noqa: BLE001 - e.g. the tool's module cannot be imported here
            results.send(("error", f"cannot receive the call: {type(err).__name__}: {err}"))
            continue
        try:
            results.send(("ok", fn(image, params)))
        except Exception as err:  # noqa: BLE001 - reported to the caller like a thread's exception
            results.send(("error", f"{type(err).__name__}: {err}"))


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class _Worker:
    def __init__(self) -> None:
        from_parent, to_child = os.pipe()  # (read end, write end)
        from_child, to_parent = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tiragent.server.workers", str(from_parent), str(to_parent)],
            pass_fds=(from_parent, to_parent), env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(from_parent)
        os.close(to_parent)
        self._send = Connection(to_child, readable=False)
        self._recv = Connection(from_child, writable=False)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def call(self, key: str, fn: Callable[[np.ndarray, Any], np.ndarray], image: np.ndarray, params: Any) -> np.ndarray:
        """Blocking: run one call in this worker (from a thread)."""
        try:
            self._send.send((fn, image, params))
            status, value = self._recv.recv()
        except (EOFError, OSError):
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            raise ToolExecutionError(
                f"{key}: its worker process died during this call ({_describe_exit(self.process.returncode)}); "
                "the call failed, the server keeps serving and starts a new worker for the next call"
            ) from None
        if status == "error":
            raise ToolExecutionError(f"{key} failed: {value}")
        return value

    def kill(self) -> None:
        if self.alive:
            self.process.kill()
        self.process.wait(timeout=5)
        self._send.close()


class ProcessWorkers:
    """Up to ``size`` worker processes, started on demand, replaced when they die."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"process workers must be at least 1, not {size}")
        self.size = size
        self._idle: list[_Worker] = []
        self._slots: asyncio.Semaphore | None = None
        self._threads = ThreadPoolExecutor(max_workers=size, thread_name_prefix="tool-worker-io")
        self._lock = threading.Lock()
        self.started = 0
        self.deaths = 0
        self.killed = 0

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    return worker
                worker.kill()
            self.started += 1
        return _Worker()

    async def run(self, key: str, fn: Callable[[np.ndarray, Any], np.ndarray], image: np.ndarray, params: Any) -> np.ndarray:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            loop = asyncio.get_running_loop()
            worker = await loop.run_in_executor(self._threads, self._take)
            try:
                result = await loop.run_in_executor(self._threads, worker.call, key, fn, image, params)
            except asyncio.CancelledError:  # a timeout or a cancelled client: stop the work itself
                self.killed += 1
                worker.kill()
                raise
            except ToolExecutionError:
                if not worker.alive:
                    self.deaths += 1
                    worker.kill()
                else:
                    self._give_back(worker)
                raise
            self._give_back(worker)
            return result

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:  # _take runs on the I/O threads
            self._idle.append(worker)

    def stats(self) -> dict[str, int]:
        with self._lock:
            idle = len(self._idle)
        return {"size": self.size, "started": self.started, "idle": idle, "deaths": self.deaths, "killed": self.killed}

    def close(self) -> None:
        with self._lock:
            for worker in self._idle:
                worker.kill()
            self._idle.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
