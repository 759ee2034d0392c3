"""Benchmark harness: `python bench/run.py NAME [NAME...]` (or `all`).

Each benchmark is `bench/<name>.py` with `main() -> list[dict]`: one row per measured thing, e.g.
`{"what": "alignctl dpo", "seconds": 12.3, "ratio": 1.01, "target": "<= 1.05x"}`. The harness
prints the rows as a table and appends them, stamped with machine facts, to bench/results.jsonl.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
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
    stamp = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "python": platform.python_version(),
    }
    for name in names:
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


def _fmt(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
