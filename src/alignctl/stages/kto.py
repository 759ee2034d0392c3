"""Train a policy on answers marked good or bad, one at a time, with KTO (TRL's KTOTrainer).

    alignctl kto --data unpaired.jsonl
    alignctl label --candidates c.jsonl --by rule:qa --unpaired -o unpaired.jsonl && alignctl kto -d unpaired.jsonl

KTO (Ethayarajh et al. 2024, arXiv 2402.01306) needs no pairs: each record is one answer with a
binary label, `{"prompt": ..., "completion": ..., "label": true}` (desirable) or `false`. Its loss
compares each answer's implied reward r = β·log πθ(y|x)/π_ref(y|x) with a reference point z0 (a
batch estimate of KL(πθ || π_ref) from mismatched prompt/answer pairs): desirable answers are
pushed above z0 with weight λ_D, undesirable ones below it with weight λ_U. A preference file
(any of the three shapes) is read too and unpaired as TRL does it: chosen -> true, rejected ->
false. With LoRA the reference is the policy with its adapter off, as in dpo. The preset carries
TRL 1.16's KTO defaults (the chapter has no KTO section).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from alignctl.config import Resolved
from alignctl.flags import Opts, Split
from alignctl.settings import PairSettings, setting
from alignctl.training.trainers import TRLTrainer

NAME = "kto"
# TRL's KTOTrainer, on unpaired records (training.data.read_unpaired): the other KTOConfig fields are settings too
TRAINER = TRLTrainer("KTO", reference=True, records="unpaired")


@dataclass
class Settings(PairSettings):
    """Built-in defaults (TRL's names); the `kto` preset layers TRL's KTO defaults on top."""

    beta: float = setting(0.1, "β: how far from the reference the policy may move (TRL: 0.1).", flag=True)
    desirable_weight: float = setting(1.0, "λ_D, weight of desirable answers in the loss.", flag=True)
    undesirable_weight: float = setting(1.0, "λ_U, weight of undesirable answers in the loss.", flag=True)
    loss_type: str = setting("kto", "TRL loss_type: kto or apo_zero_unpaired.", flag=True)
    per_device_train_batch_size: int = setting(
        8, "Answers per device per step (> 1: KTO's KL estimate pairs answers within the batch)."
    )
    precompute_ref_log_probs: bool = setting(False, "Reference log-probs once before training, not at every step.")


def run(
    resolved: Resolved, data: Path, model: str | None, output: Path, *, split: str | None = None, **switches: bool
) -> Path:
    """Train and save; returns the output dir. The shared run of a policy trained on a file: training.fit_offline."""
    from alignctl import training

    return training.fit_offline(
        stage=NAME,
        trainer=TRAINER,
        resolved=resolved,
        data=data,
        model=model,
        output=output,
        count=lambda train: {"desirable": sum(r["label"] for r in train)},
        split=split,
        **switches,
    )


def command(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="Unpaired records {prompt, completion, label} or pairs, in any format dpo --data takes.",
        ),
    ],
    split: Split = None,
    *,
    resolved: Resolved,
    opts: Opts,
) -> Path:
    """Train a policy on answers marked good or bad with KTO (TRL KTOTrainer)."""
    return run(resolved, data, opts.model, opts.output, split=split, **opts.switches())
