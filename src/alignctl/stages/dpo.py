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
from typing import Annotated

import typer

from alignctl import io
from alignctl.config import Resolved, adjust_for_device
from alignctl.console import status
from alignctl.flags import Opts
from alignctl.settings import PairSettings, setting

NAME = STAGE = "dpo"


@dataclass
class Settings(PairSettings):
    """Built-in defaults (TRL's names); the `dpo` preset layers the chapter's values on top."""

    beta: float = setting(0.1, "β, the KL strength in the DPO loss (chapter: 0.1).", flag=True)
    loss_type: str = setting("sigmoid", "TRL loss_type: sigmoid (the chapter's DPO), ipo, ...", flag=True)
    precompute_ref_log_probs: bool = setting(False, "Reference log-probs once before training, not at every step.")
    ref_model: str | None = setting(None, "Reference model (dir or alias); default: the policy it starts from.")


def read_prefs(path: str | Path) -> list[dict]:
    """Preference records trimmed to the fields DPO trains on."""
    return [{k: r[k] for k in ("prompt", "chosen", "rejected") if k in r} for r in io.load(path, "preferences")]


def trl_config() -> type:
    """TRL's DPOConfig: its other fields are settings too (`--set key=value`, presets, --config)."""
    from alignctl.training import trl_classes

    return trl_classes("DPO")[0]


def run(
    resolved: Resolved,
    data: Path,
    model: str | None,
    output: Path,
    *,
    overwrite: bool = False,
    force: bool = False,
    resume: bool = False,
    merge: bool = True,
    trust_remote_code: bool = False,
) -> Path:
    """Train and save; returns the output dir. Validates everything before any model loads."""
    from alignctl import models, runs, training

    run_, model_path, train_recs, eval_recs = training.begin_on_prefs(
        STAGE, resolved, data, read_prefs, model, output, overwrite=overwrite, force=force, resume=resume, merge=merge
    )
    if run_.up_to_date:
        runs.say_up_to_date(run_)
        return run_.out

    torch = models.setup_torch()
    adjust_for_device(resolved, cuda=torch.cuda.is_available())
    tokenizer = models.load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    policy = models.load_causal_lm(model_path, trust_remote_code=trust_remote_code)
    n_pairs = len(train_recs) + len(eval_recs)
    precompute = resolved.get("precompute_ref_log_probs") and f"reference log-probs of {n_pairs} pairs..."
    with status(precompute):  # TRL computes them here, before the first step
        # ref_model None: with LoRA the adapter-disabled policy; full fine-tuning: TRL copies the policy
        ref = None  # iterate's reference=initial: the first round's model, not the one this run starts from
        if resolved["ref_model"]:
            ref = models.load_causal_lm(
                models.resolve_model(resolved["ref_model"]), trust_remote_code=trust_remote_code
            )
        trainer = training.make_trainer("DPO", run_, resolved, policy, tokenizer, train_recs, eval_recs, ref_model=ref)
    evaluate = training.held_out_metrics if eval_recs else None
    counts = {"train": len(train_recs), "eval": len(eval_recs)}
    return training.finish(trainer, tokenizer, run_, merge=merge, evaluate=evaluate, extra={"records": counts})


def command(
    data: Annotated[Path, typer.Option("--data", "-d", help="Preference JSONL (any of the three shapes).")],
    *,
    resolved: Resolved,
    opts: Opts,
) -> Path:
    """Train a policy on preference pairs with DPO (TRL DPOTrainer)."""
    return run(resolved, data, opts.model, opts.output, **opts.switches())
