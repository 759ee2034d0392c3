"""Train a policy on preference pairs with ORPO: SFT and preference in one loss, no reference model (TRL).

    alignctl orpo --data prefs.jsonl -o runs/orpo
    alignctl orpo --data prefs.jsonl --beta 0.2 --model smollm2-135m --learning-rate 8e-6 -o runs/orpo

ORPO (Hong et al. 2024, arXiv 2403.07691) folds the preference step into supervised fine-tuning:
the loss is the chosen answer's negative log-likelihood plus λ times an odds-ratio term,
-log σ(log odds(y_w|x) - log odds(y_l|x)), where odds(y|x) = P(y|x) / (1 - P(y|x)) over the
answer's mean token log-probability. There is no reference model, neither in memory nor
precomputed, so ORPO can start from a model that had no SFT, and a run holds one model. Reads any
of the three preference shapes (docs/formats.md). TRL 1.16 keeps the trainer in
`trl.experimental.orpo` and calls λ `beta`; the preset carries TRL's ORPO defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alignctl.config import Resolved
from alignctl.flags import Opts, PrefsData, Split
from alignctl.settings import PairSettings, setting
from alignctl.training.trainers import TRLTrainer

NAME = "orpo"
# TRL's ORPOTrainer (experimental in TRL 1.16), reference-free: the other ORPOConfig fields are settings too
TRAINER = TRLTrainer("ORPO", where="trl.experimental.orpo")


@dataclass
class Settings(PairSettings):
    """Built-in defaults (TRL's names); the `orpo` preset layers TRL's ORPO defaults on top."""

    beta: float = setting(0.1, "λ, the odds-ratio term's weight beside the SFT loss (paper, TRL: 0.1).", flag=True)
    max_length: int | None = setting(1024, "Max tokens of prompt+answer (TRL: 1024).", flag=True)
    disable_dropout: bool = setting(True, "Dropout off while training (TRL).")


def run(
    resolved: Resolved, data: Path, model: str | None, output: Path, *, split: str | None = None, **switches: bool
) -> Path:
    """Train and save (training.fit_offline); returns the output dir. `switches`: overwrite, force,
    resume, merge, trust_remote_code (flags.Opts.switches())."""
    from alignctl import training

    return training.fit_offline(
        stage=NAME, trainer=TRAINER, resolved=resolved, data=data, model=model, output=output, split=split, **switches
    )


def command(data: PrefsData, split: Split = None, *, resolved: Resolved, opts: Opts) -> Path:
    """Train a policy on preference pairs with ORPO (TRL ORPOTrainer): no reference model."""
    return run(resolved, data, opts.model, opts.output, split=split, **opts.switches())
