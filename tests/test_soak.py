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
