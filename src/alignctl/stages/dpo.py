"""Train a policy on preference pairs with DPO (TRL's DPOTrainer), the chapter's "DPO 偏好训练".

    alignctl dpo --data prefs.jsonl --beta 0.1
    alignctl dpo --data prefs.jsonl --model smollm2-135m --preset dpo-cpu -o runs/dpo

Reads any of the three preference shapes (docs/formats.md). With LoRA (the chapter's preset) the
reference model is the policy with its adapter disabled, so no second copy sits in memory. The
loss is the chapter's L_DPO = -log σ(β·log πθ(y_w|x)/π_ref(y_w|x) − β·log πθ(y_l|x)/π_ref(y_l|x));
`loss_type` passes through to TRL for its variants.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alignctl.config import Resolved
from alignctl.flags import Opts, PrefsData, Split
from alignctl.settings import PairSettings, setting
from alignctl.training.trainers import TRLTrainer

NAME = "dpo"
TRAINER = TRLTrainer("DPO", reference=True)  # TRL's DPOTrainer: the other DPOConfig fields are settings too
# the losses TRL 1.16's DPOTrainer knows (its config declares no choices; tests/test_domains.py
# compares this with the trainer's own list, so a TRL update that changes it fails there)
LOSS_TYPES = (
    *("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard"),
    *("aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"),
)


@dataclass
class Settings(PairSettings):
    """Built-in defaults (TRL's names); the `dpo` preset layers the chapter's values on top."""

    beta: float = setting(0.1, "β, the KL strength in the DPO loss (chapter: 0.1).", flag=True)
    loss_type: str = setting(
        "sigmoid", "TRL loss_type: sigmoid (the chapter's DPO), ipo, ...", flag=True, choices=LOSS_TYPES
    )
    precompute_ref_log_probs: bool = setting(False, "Reference log-probs once before training, not at every step.")
    ref_model: str | None = setting(None, "Reference model (dir or alias); default: the policy it starts from.")


def run(
    resolved: Resolved, data: Path, model: str | None, output: Path, *, split: str | None = None, **switches: bool
) -> Path:
    """Train and save (training.fit_offline); returns the output dir. `switches`: overwrite,
    force, resume, merge, trust_remote_code (flags.Opts.switches())."""
    from alignctl import training

    return training.fit_offline(
        stage=NAME, trainer=TRAINER, resolved=resolved, data=data, model=model, output=output, split=split, **switches
    )


def command(data: PrefsData, split: Split = None, *, resolved: Resolved, opts: Opts) -> Path:
    """Train a policy on preference pairs with DPO (TRL DPOTrainer)."""
    return run(resolved, data, opts.model, opts.output, split=split, **opts.switches())
