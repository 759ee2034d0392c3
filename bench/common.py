"""Helpers shared by benchmarks: timing subprocesses (wall time and peak RSS) and medians."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def timed(cmd: list[str], *, cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run `cmd` to completion; wall seconds and the peak RSS (MB) of the largest child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"seconds": wall, "peak_rss_mb": max(peak, before) / 1024, "stdout": proc.stdout}


def median_of(n: int, fn) -> float:
    return statistics.median(fn() for _ in range(n))
