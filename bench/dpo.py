"""`alignctl dpo` vs a bare TRL DPOTrainer script on the same work (SmolLM2-135M, LoRA r16).

Same data (examples/prefs.jsonl, 24 pairs), config (the dpo-cpu preset's values), steps, and the
same final save (LoRA merged). Both are whole processes: imports, loading, training, saving.
Target: alignctl <= 1.05x the bare script.
"""

from __future__ import annotations

from _versus import compare
from common import REPO

STEPS = 12
REPEATS = 3


def main() -> list[dict]:
    from alignctl.models import resolve_model

    model = resolve_model("smollm2-135m")
    prefs = str(REPO / "examples" / "prefs.jsonl")
    ours = ["--data", prefs, "--model", model, "--preset", "dpo-cpu"]
    return compare("dpo", ours, "dpo_trl.py", [model, prefs], STEPS, REPEATS, "alignctl dpo --preset dpo-cpu")
