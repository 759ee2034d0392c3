"""Train a policy on preference pairs with SimPO: reference-free, length-normalised (TRL's CPO trainer).

    alignctl simpo --data prefs.jsonl -o runs/simpo
    alignctl simpo --data prefs.jsonl --beta 2.5 --simpo-gamma 1.4 --model smollm2-135m -o runs/simpo

SimPO (Meng et al. 2024, arXiv 2405.14734) scores an answer by its mean token log-probability under
the policy, r(x, y) = β/|y| · log πθ(y|x), with no reference model, and asks the chosen answer to
beat the rejected one by a margin γ: L = -log σ(r(x, y_w) - r(x, y_l) - γ). Dividing by the length
keeps it from favouring long answers; without a reference model one model sits in memory. TRL 1.16
runs it as its CPO trainer (`trl.experimental.cpo`) with `loss_type` simpo and CPO's NLL term on
the chosen answer off (`cpo_alpha` 0; `--set cpo_alpha=1` adds it back, CPO-SimPO). Reads any of
the three preference shapes (docs/formats.md). The preset carries the paper's β and γ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alignctl.config import Resolved
from alignctl.errors import InputError
from alignctl.flags import Opts, PrefsData, Split
from alignctl.settings import PairSettings, setting
from alignctl.training.trainers import TRLTrainer

NAME = "simpo"
# TRL's CPOTrainer (experimental in TRL 1.16) with loss_type simpo: the other CPOConfig fields are settings too
TRAINER = TRLTrainer("CPO", where="trl.experimental.cpo")


@dataclass
class Settings(PairSettings):
    """Built-in defaults (TRL's names); the `simpo` preset layers the paper's values on top."""

    beta: float = setting(2.0, "β, the scale of the length-normalised reward (paper: 2.0 to 2.5).", flag=True)
    simpo_gamma: float = setting(1.0, "γ, the reward margin the chosen answer must clear (paper: 0.5 β).", flag=True)
    cpo_alpha: float = setting(0.0, "Weight of CPO's NLL term on the chosen answer; 0: SimPO alone (TRL's CPO: 1).")
    loss_type: str = setting("simpo", "simpo, or alphapo (SimPO with AlphaPO's reward shape, TRL's `alpha`).")
    max_length: int | None = setting(1024, "Max tokens of prompt+answer (TRL: 1024).", flag=True)
    disable_dropout: bool = setting(True, "Dropout off while training (TRL).")


def check(resolved: Resolved) -> None:
    """SimPO is CPO's simpo loss: the trainer's other losses (sigmoid, hinge, ipo) are other methods."""
    problems = []
    if resolved["loss_type"] not in ("simpo", "alphapo"):
        problems.append(f"loss_type must be simpo or alphapo, got {resolved['loss_type']!r}")
    if resolved["beta"] <= 0:
        problems.append(f"beta must be > 0 (it divides simpo_gamma in TRL's loss), got {resolved['beta']}")
    if problems:
        raise InputError("simpo: " + "; ".join(problems))


def run(
    resolved: Resolved, data: Path, model: str | None, output: Path, *, split: str | None = None, **switches: bool
) -> Path:
    """Train and save (training.fit_offline); returns the output dir. `switches`: overwrite, force,
    resume, merge, trust_remote_code (flags.Opts.switches())."""
    from alignctl import training

    check(resolved)
    return training.fit_offline(
        stage=NAME, trainer=TRAINER, resolved=resolved, data=data, model=model, output=output, split=split, **switches
    )


def command(data: PrefsData, split: Split = None, *, resolved: Resolved, opts: Opts) -> Path:
    """Train a policy on preference pairs with SimPO (TRL CPOTrainer): no reference model."""
    return run(resolved, data, opts.model, opts.output, split=split, **opts.switches())
