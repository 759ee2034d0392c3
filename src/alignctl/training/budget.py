"""The training time budget (`--max-minutes`), shared by every training stage.

Training stops at the end of the first optimizer step (for ppo: PPO update) at which the training
time reaches the budget; the stage then saves and writes its manifest as after a normal finish, so
the run is complete and a rerun of the same command is up to date. With `--max-steps` as well,
whichever comes first stops it. Issue 15 compares methods under one CPU budget each.

What counts as training time: the wall clock from the start of this process's first optimizer step
to the end of the current one, so in-training sampling (grpo, online-dpo, ppo), periodic evaluation
and checkpoint saves count; model loading, data preparation, TRL's reference log-prob precompute,
the final held-out evaluation and the final save do not (they cost every method about the same and
are not training). A resumed run counts only its own time, from its first step after the checkpoint.
Every metrics.jsonl line carries this clock as `elapsed` (callbacks.elapsed; a resumed run's lines
continue from the checkpoint's, docs/formats.md), the x axis of `alignctl report --x time`.

Every run's manifest records what happened under `training` (`summary()`): steps, seconds, the
budget, and `stopped_by`: "max_minutes" when the budget ended it, "planned_steps" when it ran every
step it planned (max_steps, or the epochs / total_episodes).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from alignctl.console import note
from alignctl.errors import InputError
from alignctl.runs import is_main_process

BUDGET = "max_minutes"
PLANNED = "planned_steps"
_clock = time.perf_counter  # monotonic; tests replace it with a clock that advances by known steps


def check(minutes: float | None) -> None:
    """A budget must be a positive number of minutes (None: no budget)."""
    if minutes is not None and not minutes > 0:
        raise InputError(f"max_minutes must be > 0 (a fraction is fine, e.g. 0.5), got {minutes}")


class Budget:
    """The clock of one training run: `begin_step` before each optimizer step, `end_step` after it."""

    def __init__(self, minutes: float | None) -> None:
        check(minutes)
        self.minutes = minutes
        self.started: float | None = None
        self.first_step = 0
        self.steps = 0
        self.seconds = 0.0
        self.stopped = False

    def begin_step(self, done: int) -> None:
        """Before an optimizer step; `done`: steps finished before it (a resumed run's checkpoint)."""
        if self.started is None:
            self.started = _clock()
            self.first_step = done

    def end_step(self, done: int, *, last: bool = False) -> bool:
        """After an optimizer step; True when training must stop here. Every process gets rank 0's
        answer. `last`: the run's planned last step, which its plan ends, not the budget."""
        self.begin_step(done - 1)
        self.steps = done
        self.seconds = _clock() - self.started
        if self.minutes is None or last:
            return False
        self.stopped = agree(self.seconds >= self.minutes * 60)
        if self.stopped and is_main_process():
            note(f"--max-minutes {self.minutes:g}: training stops after step {done} ({self.seconds:.1f} s)")
        return self.stopped

    def summary(self) -> dict[str, Any]:
        """What the manifest records under `training`."""
        return {
            "steps": self.steps,
            "steps_this_run": self.steps - self.first_step,
            "seconds": round(self.seconds, 3),
            "max_minutes": self.minutes,
            "stopped_by": BUDGET if self.stopped else PLANNED,
        }


def agree(flag: bool) -> bool:
    """Rank 0's `flag` on every process of a distributed run (itself otherwise).

    Each process reads its own clock; were one to stop a step before another, the one still
    training would wait forever in its next gradient all-reduce.
    """
    torch = sys.modules.get("torch")  # never imported: a single process with nothing to agree with
    if torch is None:
        return flag
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    cuda = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())
