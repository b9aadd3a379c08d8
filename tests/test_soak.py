"""The soak's short version: 20 s of mixed load with faults interleaved against a real `tir-agent serve` over HTTP
(benchmarks/soak.py; the 10-minute run's table is docs/benchmarks/soak.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def test_a_short_soak_passes():
    done = subprocess.run([sys.executable, str(SOAK), "--seconds", "20", "--clients", "4", "--window", "5", "--name", ""],
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert done.returncode == 0 and "**Passed**" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
    for fault in ("bad base64: clear error", "unknown id: clear error", "hanging tool: clear error", "raising tool: clear error",
                  "out-of-range parameter: clear error", "wrong-type parameter: clear error", "disconnected mid-call",
                  "path outside the roots: clear error", "foreign origin: refused"):  # fmt: skip
        assert fault in done.stdout, fault  # every kind of fault was met and answered


def test_the_verdict_tells_a_descriptor_leak_from_calls_in_flight():
    sys.path.insert(0, str(SOAK.parent))
    from soak import verdict

    def run(fds):
        windows = [{"t_s": i, "p99_ms": 10.0, "rss_mb": 100.0, "fds": n, "store": {}} for i, n in enumerate(fds)]
        return verdict({"windows": windows, "problem_count": 0, "problems": [], "alive": True}, store_mb=64)

    assert run([20, 21, 23, 56]) == []  # one sample while sockets are in flight
    assert run([20, 21, 45, 56]) == ["open file descriptors grew from 21 to at least 45 in every later window"]
    assert run([20, 21, 30, 42, 50, 60]) == ["open file descriptors grew from 21 to at least 42 in every later window"]
