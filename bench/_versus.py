"""Shared by the train-rm / grpo / online-dpo benchmarks: alignctl vs a bare TRL script, interleaved.

Both sides are whole processes (imports, loading, training, saving), run alternately so drift on
a shared machine hits both alike, and each repeat swaps which side goes first (the second run of a
pair finds the files in the page cache and the CPU warm); the figure is the ratio of median wall
times. Each side also
reports its trainer's own seconds per optimizer step (alignctl: `train_runtime` in alignctl.json;
the bare script prints it as the last stdout line, JSON).

Both sides run with OMP_NUM_THREADS=$BENCH_THREADS (default 1): on a 2-core machine shared with
other jobs, torch's two OpenMP threads spin at barriers while the other jobs hold the cores, and a
reward-model step measured 48 s with 2 threads against 9 s with 1 (same script, same minute).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import REPO, VENV_BIN, timed

BARE = REPO / "bench" / "bare"
ENV = {"OMP_NUM_THREADS": os.environ.get("BENCH_THREADS", "1")}


def compare(stage: str, ours_args: list[str], bare_script: str, bare_args: list[str], steps: int, repeats: int,
            label: str) -> list[dict]:  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix=f"bench-{stage}-"))
    ours, bare, ours_step, bare_step = [], [], [], []
    try:
        for i in range(repeats):

            def run_ours(i=i):
                out = work / f"ours-{i}"
                cmd = [str(VENV_BIN / "alignctl"), stage, *ours_args, "--max-steps", str(steps), "-o", str(out)]
                ours.append(timed(cmd, env=ENV))
                manifest = json.loads((out / "alignctl.json").read_text())
                ours_step.append(manifest["final_metrics"]["train_runtime"] / steps)

            def run_bare(i=i):
                cmd = [sys.executable, str(BARE / bare_script), *bare_args, str(work / f"bare-{i}"), str(steps)]
                b = timed(cmd, env=ENV)
                bare.append(b)
                bare_step.append(json.loads(b["stdout"].strip().splitlines()[-1])["train_runtime"] / steps)

            for side in (run_ours, run_bare) if i % 2 == 0 else (run_bare, run_ours):
                side()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t_ours = statistics.median(r["seconds"] for r in ours)
    t_bare = statistics.median(r["seconds"] for r in bare)
    return [
        {
            "what": f"bare TRL script ({bare_script})",
            "steps": steps,
            "seconds": t_bare,
            "s_per_step": statistics.median(bare_step),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in bare),
        },
        {
            "what": label,
            "steps": steps,
            "seconds": t_ours,
            "s_per_step": statistics.median(ours_step),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ours),
            "ratio": t_ours / t_bare,
            "target": "<= 1.05",
        },
    ]
