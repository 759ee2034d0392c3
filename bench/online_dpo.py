"""`alignctl online-dpo` vs a bare TRL OnlineDPOTrainer script on the same work (SmolLM2-135M).

Same prompts (examples/qa/train.jsonl), config (the online-dpo preset: beta 0.1, gradient
checkpointing off; 4 prompts x 2 samples x 32 new tokens), reward (-words/100: rule:length),
steps, and final save. Also one bare run with gradient checkpointing on, to show what it costs
generation (TRL then samples without the KV cache). Target: alignctl <= 1.05x bare.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from _versus import BARE, ENV, compare
from common import REPO, timed

STEPS = 4
REPEATS = 3
GC_STEPS = 2


def main() -> list[dict]:
    from alignctl.models import resolve_model

    model = resolve_model("smollm2-135m")
    prompts = str(REPO / "examples" / "qa" / "train.jsonl")
    ours = ["--prompts", prompts, "--reward", "rule:length", "--model", model, "--batch-size", "4",
            "--max-new-tokens", "32"]  # fmt: skip
    rows = compare("online-dpo", ours, "online_dpo_trl.py", [model, prompts], STEPS, REPEATS,
                   "alignctl online-dpo (preset online-dpo)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        gc = timed([sys.executable, str(BARE / "online_dpo_trl.py"), model, prompts, str(Path(tmp) / "gc"),
                    str(GC_STEPS), "gc"], env=ENV)  # fmt: skip
    per_step = json.loads(gc["stdout"].strip().splitlines()[-1])["train_runtime"] / GC_STEPS
    rows.append({"what": "bare TRL, gradient_checkpointing=True", "steps": GC_STEPS, "seconds": gc["seconds"],
                 "s_per_step": per_step, "peak_rss_mb": gc["peak_rss_mb"]})  # fmt: skip
    return rows
