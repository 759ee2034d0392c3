"""`alignctl grpo` vs a bare TRL GRPOTrainer script on the same work (SmolLM2-135M, full fine-tuning).

Same prompts (examples/qa/train.jsonl), config (the grpo preset as it runs on CPU: beta 0.04,
temperature 0.9; 4 generations x 2 prompts x 32 new tokens), reward (-words/100: alignctl's
rule:length), steps, and final save. Target: alignctl <= 1.05x the bare script.
"""

from __future__ import annotations

from _versus import compare
from common import REPO

STEPS = 4
REPEATS = 3


def main() -> list[dict]:
    from alignctl.models import resolve_model

    model = resolve_model("smollm2-135m")
    prompts = str(REPO / "examples" / "qa" / "train.jsonl")
    ours = ["--prompts", prompts, "--reward", "rule:length", "--model", model, "--num-generations", "4",
            "--batch-size", "8", "--max-completion-length", "32"]  # fmt: skip
    return compare("grpo", ours, "grpo_trl.py", [model, prompts], STEPS, REPEATS, "alignctl grpo (preset grpo)")
