"""`alignctl train-rm` vs a bare TRL RewardTrainer script on the same work (SmolLM2-135M, LoRA r32).

Same data (examples/prefs.jsonl, 24 pairs), config (the train-rm preset as it runs on CPU, batch 4,
max_length 128), steps, and final save (LoRA merged, score head included).
Target: alignctl <= 1.05x the bare script.
"""

from __future__ import annotations

from _versus import compare
from common import REPO

STEPS = 6
REPEATS = 3


def main() -> list[dict]:
    from alignctl.models import resolve_model

    model = resolve_model("smollm2-135m")
    prefs = str(REPO / "examples" / "prefs.jsonl")
    ours = ["--data", prefs, "--model", model, "--batch-size", "4", "--max-length", "128"]
    return compare("train-rm", ours, "train_rm_trl.py", [model, prefs], STEPS, REPEATS,
                   "alignctl train-rm (preset train-rm)")  # fmt: skip
