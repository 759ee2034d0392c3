"""`alignctl dpo` vs a bare TRL DPOTrainer script on the same work (SmolLM2-135M, LoRA r16).

Same data (examples/prefs.jsonl, 24 pairs), config (the dpo-cpu preset's values), steps, and the
same final save (LoRA merged). Both are whole processes: imports, loading, training, saving.
Target (issue 2): alignctl <= 1.05x the bare script.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import REPO, VENV_BIN, timed

STEPS = 12
REPEATS = 3


def main() -> list[dict]:
    from alignctl.models import resolve_model

    model = resolve_model("smollm2-135m")
    prefs = REPO / "examples" / "prefs.jsonl"
    work = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    ours, bare = [], []
    try:
        for i in range(REPEATS):  # interleaved, so drift on a shared machine hits both alike
            out = work / f"ours-{i}"
            ours.append(timed([str(VENV_BIN / "alignctl"), "dpo", "--data", str(prefs), "--model", model,
                               "--preset", "dpo-cpu", "--max-steps", str(STEPS), "-o", str(out)]))
            bare.append(timed([sys.executable, str(REPO / "bench" / "bare" / "dpo_trl.py"), model, str(prefs),
                               str(work / f"bare-{i}"), str(STEPS)]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t_ours = statistics.median(r["seconds"] for r in ours)
    t_bare = statistics.median(r["seconds"] for r in bare)
    return [
        {"what": "bare TRL DPOTrainer script", "steps": STEPS, "seconds": t_bare,
         "peak_rss_mb": max(r["peak_rss_mb"] for r in bare)},
        {"what": "alignctl dpo --preset dpo-cpu", "steps": STEPS, "seconds": t_ours,
         "peak_rss_mb": max(r["peak_rss_mb"] for r in ours), "ratio": t_ours / t_bare, "target": "<= 1.05"},
    ]
