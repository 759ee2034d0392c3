"""`alignctl kto` vs a bare TRL KTOTrainer script on the same work (SmolLM2-135M, LoRA r16).

Same data (examples/prefs.jsonl, 24 pairs unpaired into 48 answers), config (KTO's defaults with
the dpo-cpu learning rate, LoRA and batch), steps, and the same final save (LoRA merged). Both are
whole processes: imports, loading, training, saving. Target: alignctl <= 1.05x.
"""

from __future__ import annotations

from _versus import compare
from common import REPO

STEPS = 12
REPEATS = 3
SETTINGS = {"use_peft": "true", "lora_r": 16, "lora_alpha": 16, "max_length": 256, "logging_steps": 2}
SETTINGS |= {"optim": "adamw_torch", "warmup_steps": 0}


def main() -> list[dict]:
    from alignctl.models import resolve_model

    model = resolve_model("smollm2-135m")
    prefs = str(REPO / "examples" / "prefs.jsonl")
    ours = ["--data", prefs, "--model", model, "--learning-rate", "2e-4", "--batch-size", "4"]
    ours += [a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")]
    return compare("kto", ours, "kto_trl.py", [model, prefs], STEPS, REPEATS, "alignctl kto (LoRA, lr 2e-4)")
