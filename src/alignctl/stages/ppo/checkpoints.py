"""PPO's checkpoints: what `--resume` continues from (`<work>/checkpoint-<update>`).

Only the trainable weights (LoRA adapters, or the full policy and value model), the optimizer and
scheduler state and the counters are saved; the frozen reference and reward weights are the
input models. `trainer_state.json` is written last, so a checkpoint that has it is complete
(`runs.last_checkpoint`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from alignctl.errors import InputError
from alignctl.io import write_json

from . import roles as roles_mod

if TYPE_CHECKING:
    from .trainer import Plan

STATE_FILE = "trainer_state.json"


def save_checkpoint(work: Path, update: int, model, optimizer, scheduler, state: dict, keep: int | None) -> None:
    """`<work>/checkpoint-<update>`: trainable weights, optimizer, scheduler, counters (rank 0)."""
    import torch
    from safetensors.torch import save_file

    final = work / f"checkpoint-{update}"
    tmp = work / f".checkpoint-{update}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {n: p.detach().contiguous() for n, p in roles_mod.trainable_parameters(model).items()}
    save_file(weights, tmp / "trainable.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    write_json(tmp / STATE_FILE, state)  # written last: runs.last_checkpoint looks for it
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    if keep:
        older = sorted((d for d in work.glob("checkpoint-*") if d != final), key=lambda d: int(d.name.split("-")[1]))
        for d in older[: max(0, len(older) - (keep - 1))]:
            shutil.rmtree(d, ignore_errors=True)


def load_checkpoint(path: Path, model, optimizer, scheduler, plan: Plan) -> dict:
    import torch
    from safetensors.torch import load_file

    state = json.loads((path / STATE_FILE).read_text())
    if state.get("batch_size") != plan.batch_size:
        raise InputError(
            f"--resume: {path} was written with batch_size {state.get('batch_size')} (episodes per update), "
            f"this run has {plan.batch_size}; resume with the same batch settings and number of processes"
        )
    weights = load_file(path / "trainable.safetensors")
    trainable = roles_mod.trainable_parameters(model)
    if set(weights) != set(trainable):
        raise InputError(f"--resume: {path} holds different trainable weights than this run's model")
    with torch.no_grad():
        for name, p in trainable.items():
            p.copy_(weights[name])
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    return state
