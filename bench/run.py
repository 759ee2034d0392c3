"""Benchmark harness: `python bench/run.py NAME [NAME...]` (or `all`).

Each benchmark is `bench/<name>.py` with `main() -> list[dict]`: one row per measured thing, e.g.
`{"what": "alignctl dpo", "seconds": 12.3, "ratio": 1.01, "target": "<= 1.05x"}`. The harness
prints the rows as a table and appends them to bench/results.jsonl, each stamped with the command
that ran it, the time it started, the machine (host, CPU model, cores, memory), its load average
at the start, the Python version and the git commit: a figure in docs/performance.md cites a row
written here, never one typed in.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"


def available() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem not in ("run", "common") and not p.stem.startswith("_"))


def run_one(name: str) -> list[dict]:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench/{name}.py not found; available: {', '.join(available())}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(module)
    return module.main()


def main(argv: list[str]) -> int:
    names = available() if argv in ([], ["all"]) else argv
    console = Console()
    command = shlex.join(["python", "bench/run.py", *argv])
    for name in names:
        stamp = {"command": command, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **machine()}
        rows = run_one(name)
        table = Table(title=f"bench {name}")
        keys = list(dict.fromkeys(k for r in rows for k in r))
        for k in keys:
            table.add_column(k)
        for r in rows:
            table.add_row(*[_fmt(r.get(k, "")) for k in keys])
        console.print(table)
        with open(RESULTS, "a", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps({"bench": name, **stamp, **r}) + "\n")
    return 0


def machine() -> dict:
    """What the figures depend on besides the code: where, on what, how busy, which commit."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gb = 0.0
    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE, capture_output=True, text=True)
    return {
        "machine": f"{platform.node()}: {cpu}, {platform.machine()} {os.cpu_count()} cores, {mem_gb:.0f} GB",
        "load_avg": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "git": git.stdout.strip() or None,
    }


def _fmt(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
