"""Helpers shared by benchmarks: timing subprocesses (wall time and peak RSS) and medians."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


# a fresh interpreter runs the command so RUSAGE_CHILDREN sees that one process tree alone
_WRAPPER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "sys.stderr.write('\\n__PEAK_RSS_KB__ %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(rc)"
)


def timed(cmd: list[str], *, cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run `cmd` to completion: wall seconds and the peak RSS (MB) of its largest process."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *cmd],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak_kb = int(proc.stderr.rsplit("__PEAK_RSS_KB__", 1)[1].split()[0])
    return {"seconds": wall, "peak_rss_mb": peak_kb / 1024, "stdout": proc.stdout, "stderr": proc.stderr}


def median_of(n: int, fn) -> float:
    return statistics.median(fn() for _ in range(n))
