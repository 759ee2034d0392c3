"""Everything alignctl knows about TRL, for the stages backed by a TRL trainer (each declares it:
`TRAINER = TRLTrainer(...)`, `training.trainers`).

We adapt to TRL, we do not subclass it (docs/design.md, "Decisions"): build TRL's config from the resolved settings
(same field names, no mapping table), add our callbacks (metrics.jsonl, a rich progress bar),
train, and report the final metrics. Which TRL config fields are ours to set (`MANAGED`) or never
TRL's (`OWN_KEYS`), and where TRL keeps each trainer, are in `trainers.py`; the shared run
skeletons are in `fit.py`, the records each trainer reads in `data.py`. Nothing here branches on
the method: what differs between trainers is in their declaration.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignctl.console import note
from alignctl.runs import Run, is_main_process
from alignctl.training.callbacks import budget_of
from alignctl.training.callbacks import callbacks as callbacks
from alignctl.training.callbacks import trim_metrics_for_resume as trim_metrics_for_resume
from alignctl.training.fit import begin_offline as begin_offline
from alignctl.training.fit import begin_run as begin_run
from alignctl.training.fit import fit_offline as fit_offline
from alignctl.training.fit import fit_on_rewards as fit_on_rewards
from alignctl.training.fit import fit_online as fit_online
from alignctl.training.fit import split_records as split_records
from alignctl.training.trainers import OWN_KEYS, TRLTrainer

if TYPE_CHECKING:
    from alignctl.config import Resolved


def trl_kwargs(config_cls: type, resolved: Resolved, run: Run, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for a TRL config: every resolved setting that is one of its fields."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    kwargs = {k: v for k, v in resolved.values.items() if k in names and k not in OWN_KEYS}
    kwargs.update(
        output_dir=str(run.work),
        disable_tqdm=True,  # our own rich bar on stderr replaces tqdm
        save_strategy="steps" if resolved.get("save_steps") else "no",
        logging_first_step=True,
    )
    kwargs["report_to"] = resolved.get("report_to") or "none"
    if not _cuda():
        kwargs["use_cpu"] = True
    kwargs.update(extra)
    return kwargs


def make_trainer(
    trainer: TRLTrainer,
    run: Run,
    resolved: Resolved,
    model,
    tokenizer,
    train_data,
    eval_data=None,
    *,
    engine=None,
    **kwargs,
):
    """The stage's TRL trainer (its declaration: `training.trainers`), its config built from the
    resolved settings, with our callbacks.

    `train_data` / `eval_data`: records (lists of dicts) or datasets. Periodic evaluation runs every
    `eval_steps` when there is eval data and eval_steps is set. LoRA comes from the settings
    unless `peft_config` is given (train-rm's score head needs its own). `engine`: alignctl's
    rollout engine samples instead of transformers (engine_hooks.py).
    """
    from datasets import Dataset

    config_cls, trainer_cls = trainer.classes()
    if engine is not None:
        from alignctl.training.engine_hooks import plug

        trainer_cls, hooks = plug(trainer_cls, engine)
        kwargs.update(hooks)

    def dataset(data):
        return Dataset.from_list(data) if isinstance(data, list) else data

    periodic = bool(eval_data) and bool(resolved.get("eval_steps"))
    extra = {"eval_strategy": "steps", "eval_steps": resolved["eval_steps"]} if periodic else {}
    if "peft_config" not in kwargs:
        from alignctl.models import lora_config

        kwargs["peft_config"] = lora_config(resolved.values) if resolved["use_peft"] else None
    return trainer_cls(
        model=model,
        args=config_cls(**trl_kwargs(config_cls, resolved, run, **extra)),
        train_dataset=dataset(train_data),
        eval_dataset=dataset(eval_data) if eval_data else None,
        processing_class=tokenizer,
        callbacks=callbacks(run),
        **kwargs,
    )


def finish(trainer, tokenizer, run: Run, *, merge: bool, evaluate=None, extra: dict | None = None) -> Path:
    """Train (resuming where asked), add `evaluate(trainer)`'s metrics, save, write the manifest."""
    final = train(trainer, run)
    if evaluate is not None:
        final.update(evaluate(trainer))
    save_final(trainer, tokenizer, run, merge=merge)
    budget = budget_of(trainer)
    if budget is not None:
        extra = {**(extra or {}), "training": budget.summary()}
    return run.finish(final, extra=extra)


def held_out_metrics(trainer) -> dict[str, float]:
    """TRL's own evaluation of the final model on the eval data (numbers only)."""
    return {k: v for k, v in trainer.evaluate().items() if isinstance(v, int | float)}


def _cuda() -> bool:
    from alignctl.models import has_cuda

    return has_cuda()


def adjust_checkpointing(resolved: Resolved, *, cuda: bool) -> None:
    """Gradient checkpointing off on CPU unless the user asked for it (one printed line).

    On CPU it only costs time: DPO steps ran ~15% slower with it, and TRL's online DPO then
    generates without the KV cache, ~10x slower (docs/design.md, "Facts measured on this machine").
    A value from a preset or the built-in defaults is changed; one from --set, --config or a
    flag is the user's and is kept.
    """
    if cuda or not resolved.get("gradient_checkpointing"):
        return
    source = resolved.sources.get("gradient_checkpointing", "")
    if source.startswith(("preset", "default")):
        resolved.override("gradient_checkpointing", False, "auto: no CUDA device")
        note(f"no CUDA device: gradient_checkpointing off ({resolved.stage} asked for it; on CPU it only costs time)")


def train(trainer, run: Run) -> dict[str, float]:
    """Run `trainer.train()` (resuming where asked) and return the final metrics."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trim_metrics_for_resume(run)
    for cb in (PrinterCallback, ProgressCallback):  # they print raw dicts / tqdm; we log to metrics.jsonl
        trainer.remove_callback(cb)
    result = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    final: dict[str, float] = {}
    for row in trainer.state.log_history:  # the last logged value of each metric is the final one
        final.update({k: v for k, v in row.items() if isinstance(v, int | float) and k not in ("step", "epoch")})
    final.update({k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float)})
    final["global_step"] = trainer.state.global_step
    budget = budget_of(trainer)
    if budget is not None:  # training time as --max-minutes counts it (budget.py), beside TRL's train_runtime
        final["train_seconds"] = round(budget.seconds, 3)
    return final


def save_final(trainer, tokenizer, run: Run, *, merge: bool = True) -> None:
    """Save the trained model into `run.work`. Every rank calls this; only rank 0 writes.

    DDP (and one process): each rank holds the whole model, so rank 0 saves it alone (merging LoRA).
    DeepSpeed and FSDP shard the weights across ranks: every rank takes part in gathering them
    (transformers' `Trainer.save_model`, which writes on rank 0 only); a LoRA adapter saved that way
    is merged afterwards on rank 0 (`models.merge_adapter_dir`).
    """
    from alignctl import models

    sharded = bool(getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False))
    remove_checkpoints(run)
    if not sharded:
        if is_main_process():
            models.save_model(trainer.model, tokenizer, run.work, merge=merge)
        return
    trainer.save_model(str(run.work))
    if is_main_process():
        if tokenizer is not None:
            tokenizer.save_pretrained(run.work)
        if merge and (run.work / "adapter_config.json").is_file():
            models.merge_adapter_dir(run.work, trust_remote_code=False)
    trainer.accelerator.wait_for_everyone()


def remove_checkpoints(run: Run) -> None:
    """Checkpoints exist to resume a crashed run; a finished run does not keep them."""
    if not is_main_process():
        return
    import shutil

    for d in Path(run.work).glob("checkpoint-*"):
        shutil.rmtree(d, ignore_errors=True)
