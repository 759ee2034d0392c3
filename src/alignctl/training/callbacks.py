"""transformers callbacks for the TRL-backed stages: metrics.jsonl, a rich progress bar, no wasted
final checkpoint, the time budget (--max-minutes), and the crash-injection test aid; plus trimming
metrics on resume."""

from __future__ import annotations

import json
import math
import os
import signal

from alignctl.console import console
from alignctl.runs import Run, is_main_process
from alignctl.training.budget import Budget


def callbacks(run: Run) -> list:
    from transformers import TrainerCallback

    class MetricsFile(TrainerCallback):
        """One JSON line per logging step in `<run>/metrics.jsonl` (what `report` plots), with
        `elapsed` from the budget's clock (see `elapsed`)."""

        def __init__(self, budget: Budget) -> None:
            self.budget = budget
            self.before = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.before = elapsed_before_resume(run)  # after `train` trimmed the file

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
            row["elapsed"] = elapsed(self.budget, self.before)
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

    class TimeBudget(TrainerCallback):
        """`--max-minutes` (budget.py): ends training after the step at which the budget is spent,
        with no checkpoint (the final save follows) and that step's metrics logged. It also times
        every run, budget or not, for the manifest's `training` record."""

        def __init__(self) -> None:
            self.budget = Budget(run.resolved.get("max_minutes") if run.resolved else None)

        def on_step_begin(self, args, state, control, **kwargs):
            self.budget.begin_step(state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if self.budget.end_step(state.global_step, last=state.global_step >= state.max_steps):
                control.should_training_stop = True
                control.should_save = False
                control.should_log = True
            return control

    clock = TimeBudget()
    out = [MetricsFile(clock.budget), Progress(), NoFinalCheckpoint(), clock]
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


def elapsed(budget: Budget, before: float) -> float:
    """A metrics line's `elapsed`: the budget's training seconds at the end of the line's step (no
    clock reading of its own, so the budget and the plots agree to the step), plus `before`."""
    return round(before + budget.seconds, 3)


def elapsed_before_resume(run: Run) -> float:
    """Where a resumed run's `elapsed` continues from: the last `elapsed` kept in metrics.jsonl
    after `trim_metrics_for_resume` (0 for a fresh run, or a file written before `elapsed` was)."""
    if not run.resume_from or not run.metrics_path.exists():
        return 0.0
    last = 0.0
    for ln in run.metrics_path.read_text().splitlines():
        value = json.loads(ln).get("elapsed") if ln.strip() else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            last = float(value)
    return last


def budget_of(trainer) -> Budget | None:
    """The TimeBudget callback's clock of a trainer made by `training.make_trainer`."""
    clocks = (getattr(cb, "budget", None) for cb in trainer.callback_handler.callbacks)
    return next((b for b in clocks if isinstance(b, Budget)), None)
