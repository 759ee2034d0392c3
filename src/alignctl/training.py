"""Everything alignctl knows about TRL, for the TRL-backed stages (dpo, train-rm, grpo, online-dpo).

We adapt to TRL, we do not subclass it (style.md): build TRL's config from the resolved settings
(same field names, no mapping table), add our callbacks (metrics.jsonl, a rich progress bar),
train, and report the final metrics. Which TRL config fields are ours to set (`MANAGED`) or never
TRL's (`OWN_KEYS`), and every import from `trl.experimental` (`online_dpo`), live here too: TRL
is pinned `>=1.16,<1.17` (pyproject.toml) and moves experimental trainers between minor releases
(1.13 removed PPO), so when the pin moves this module is the one to check.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignctl.console import console, note
from alignctl.errors import InputError
from alignctl.runs import Run, is_main_process

if TYPE_CHECKING:
    from alignctl.config import Resolved

# TRL config fields alignctl sets itself, and what to do instead (config.resolve refuses them)
MANAGED = {
    "output_dir": "use --output",
    "disable_tqdm": "alignctl shows its own progress bar",
    "save_strategy": "set save_steps (null: no checkpoints)",
    "logging_first_step": "alignctl always logs the first step",
    "use_cpu": "alignctl sets it from the machine",
}
# settings that are ours (LoRA, data split, ...) and never go into a TRL config
OWN_KEYS = {
    "use_peft",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "eval_split",
    "max_prompt_length",
    "merge",
}


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


def online_dpo() -> tuple[type, type]:
    """`(OnlineDPOConfig, OnlineDPOTrainer)` from `trl.experimental.online_dpo` (TRL 1.16)."""
    # the one acknowledged use of trl.experimental: its import-time warning says what this module is for
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    return OnlineDPOConfig, OnlineDPOTrainer


def trl_classes(name: str) -> tuple[type, type]:
    """(config class, trainer class) of a TRL trainer by its name: DPO, KTO, Reward, GRPO, OnlineDPO."""
    if name == "OnlineDPO":
        return online_dpo()
    import trl

    return getattr(trl, f"{name}Config"), getattr(trl, f"{name}Trainer")


def make_trainer(name: str, run: Run, resolved: Resolved, model, tokenizer, train_data, eval_data=None, **kwargs):
    """TRL's `<name>Trainer`, its config built from the resolved settings, with our callbacks.

    `train_data` / `eval_data`: records (lists of dicts) or datasets. Periodic evaluation runs every
    `eval_steps` when there is eval data and eval_steps is set. LoRA comes from the settings
    unless `peft_config` is given (train-rm's score head needs its own).
    """
    from datasets import Dataset

    config_cls, trainer_cls = trl_classes(name)

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
    generates without the KV cache, ~10x slower (design.md, "Facts measured on this machine").
    A value from a preset or the built-in defaults is changed; one from --set, --config or a
    flag is the user's and is kept.
    """
    if cuda or not resolved.get("gradient_checkpointing"):
        return
    source = resolved.sources.get("gradient_checkpointing", "")
    if source.startswith(("preset", "default")):
        resolved.override("gradient_checkpointing", False, "auto: no CUDA device")
        note(f"no CUDA device: gradient_checkpointing off ({resolved.stage} asked for it; on CPU it only costs time)")


def split_records(records: list[dict], eval_split: str | float | None, seed: int, read) -> tuple[list, list]:
    """(train, eval): `eval_split` is a fraction in (0, 1) or a second file read with `read`."""
    if eval_split in (None, "", 0, 0.0):
        return records, []
    try:
        frac = float(eval_split)
    except (TypeError, ValueError):
        return records, read(str(eval_split))
    if not 0 < frac < 1:
        raise InputError(f"--eval-split {eval_split}: a fraction must be between 0 and 1 (or give a file)")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(records) * frac))
    if n_eval >= len(records):
        raise InputError(f"--eval-split {eval_split}: leaves no training records out of {len(records)}")
    held = set(order[:n_eval])
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


def begin_on_prefs(
    stage: str,
    resolved: Resolved,
    data: Path,
    read,
    model: str | None,
    output: Path,
    *,
    overwrite: bool,
    force: bool,
    resume: bool,
    merge: bool,
) -> tuple[Run, Path, list, list]:
    """Start a stage that trains on a preference file (dpo, train-rm).

    Reads and splits the pairs (errors here come before any model loads), fingerprints the inputs
    and opens the run. Returns (run, model dir, train records, eval records); the caller stops
    when `run.up_to_date`.
    """
    from alignctl import models, runs

    records = read(data)
    train_recs, eval_recs = split_records(records, resolved["eval_split"], resolved["seed"], read)
    if not eval_recs and resolved.get("eval_steps"):
        note(f"eval_steps={resolved['eval_steps']} does nothing without eval data (--eval-split 0.1 or a file)")
    model_path = models.resolve_model(model)
    inputs = {"data": runs.input_fingerprint(data), "model": runs.input_fingerprint(model_path)}
    if resolved["eval_split"] and Path(str(resolved["eval_split"])).is_file():
        inputs["eval_data"] = runs.input_fingerprint(resolved["eval_split"])
    run = runs.begin(
        stage,
        output,
        inputs=inputs,
        resolved=resolved,
        overwrite=overwrite,
        force=force,
        resume=resume,
        parent_model=model or models.DEFAULT_MODEL,
        extra={"merge": merge},
    )
    return run, model_path, train_recs, eval_recs


def callbacks(run: Run) -> list:
    from transformers import TrainerCallback

    class MetricsFile(TrainerCallback):
        """One JSON line per logging step in `<run>/metrics.jsonl` (what `report` plots)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
            for k, v in logs.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    row[k] = v
            with open(run.metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    class Progress(TrainerCallback):
        """A rich progress bar for optimizer steps, with the latest loss."""

        def __init__(self) -> None:
            self.bar = None
            self.task = None

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn(f"[bold]{run.stage}[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=console,
                transient=False,
                refresh_per_second=2,  # steps take seconds; fewer wake-ups of the render thread
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=state.max_steps, completed=state.global_step, status="")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.update(self.task, status=f"loss {logs['loss']:.4f}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.stop()
                self.bar = None

    class NoFinalCheckpoint(TrainerCallback):
        """transformers saves a whole checkpoint (weights + optimizer state) after the last step
        whenever save_strategy is "steps"; `save_final` writes the model right after, and the
        checkpoint is deleted when the run finishes, so that save is pure cost (2.7 s of a
        4-step SmolLM2 online-dpo run, most of its gap to a bare TRL script). Periodic
        checkpoints (`save_steps`) are kept for --resume."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = False
            return control

    out = [MetricsFile(), Progress(), NoFinalCheckpoint()]
    if os.environ.get("ALIGNCTL_CRASH_AFTER_STEP"):
        out.append(_crash_injection(TrainerCallback, int(os.environ["ALIGNCTL_CRASH_AFTER_STEP"])))
    return out


def _crash_injection(base: type, step: int):
    """A test aid (ALIGNCTL_CRASH_AFTER_STEP=N): SIGKILL the process once checkpoint N is on disk.

    A kill, not an exception: nothing gets to clean up, as when a job is preempted or OOM-killed,
    so the resume test sees exactly what a real crash leaves in `<out>.partial`.
    """

    class CrashAfterStep(base):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step >= step:
                os.kill(os.getpid(), signal.SIGKILL)

    return CrashAfterStep()


def trim_metrics_for_resume(run: Run) -> None:
    """On resume, drop metric lines logged after the checkpoint so the file has no duplicates."""
    if not run.resume_from or not run.metrics_path.exists() or not is_main_process():
        return
    step = int(run.resume_from.name.split("-", 1)[1])
    keep = [
        ln for ln in run.metrics_path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step
    ]
    run.metrics_path.write_text("".join(k + "\n" for k in keep))


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
