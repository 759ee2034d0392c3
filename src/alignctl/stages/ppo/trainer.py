"""PPO's loop: per batch of prompts, one rollout, then `num_ppo_epochs` x `num_mini_batches` updates.

Steps 3-4 of the chapter's PPO flow ("PPO 训练细节及超参数"): the experience buffer trains the
value model (clipped value loss) and the policy (clipped policy loss) together, with the gradient
of `loss = loss_p + vf_coef * loss_v` per micro-batch (the two terms backpropagated one after the
other: they touch disjoint weights) and gradient accumulation.

Batch sizes use TRL's names and meanings, so a TRL PPO command line carries over:
`per_device_train_batch_size` x `gradient_accumulation_steps` prompts per process per rollout
("local batch"); x the number of processes = `batch_size`, the episodes one update consumes;
`total_episodes` (or `num_train_epochs` x prompts) / `batch_size` = updates. Each PPO epoch
splits the local batch into `num_mini_batches` mini-batches, one optimizer step each, with
gradients accumulated over micro-batches of `per_device_train_batch_size`.

Distributed runs go through accelerate (`accelerate launch`, `torchrun`): the trainable module is
wrapped once (DDP etc.), each process samples its own share of the prompts, metrics are averaged
across processes, and only rank 0 writes metrics, checkpoints and the output dirs.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from alignctl.console import console, warn
from alignctl.generation.sampling import row_seed
from alignctl.runs import Run
from alignctl.training.budget import Budget
from alignctl.training.callbacks import elapsed, elapsed_before_resume

from . import roles as roles_mod
from . import rollout
from .checkpoints import load_checkpoint, save_checkpoint


@dataclass
class Plan:
    world: int
    micro: int  # per_device_train_batch_size
    accum: int  # micro-batches per mini-batch (gradient_accumulation_steps / num_mini_batches)
    mini_batches: int
    local_batch: int
    batch_size: int
    num_updates: int
    total_episodes: int


def make_plan(s: dict, n_prompts: int, world: int) -> Plan:
    micro, accum, mini = (
        int(s["per_device_train_batch_size"]),
        int(s["gradient_accumulation_steps"]),
        int(s["num_mini_batches"]),
    )
    local = micro * accum
    batch = local * world
    total = s.get("total_episodes") or math.ceil(float(s["num_train_epochs"]) * n_prompts)
    updates = math.ceil(total / batch)
    if int(s.get("max_steps") or -1) > 0:  # --max-steps: stop after that many updates
        updates = min(updates, int(s["max_steps"]))
    return Plan(world, micro, accum // mini, mini, local, batch, updates, int(total))


def _seed(seed: int, update: int, rank: int) -> None:
    # Each update draws from a seed of its own (and each process from its own stream): a resumed run
    # samples exactly what the uninterrupted run would have, without saving generator states.
    import random

    import torch

    mixed = (seed * 1_000_003 + update * 7_919 + rank * 104_729) % (2**63)
    torch.manual_seed(mixed)
    random.seed(mixed)


# --------------------------------------------------------------------------------------------
# One update


def _micro_batch(exp: rollout.Experience, idx, trim: bool = True):
    """Rows `idx` of the buffer, trimmed to the columns any of them uses (less padding to compute)."""
    from alignctl.rlmath import first_true_indices

    mask = exp.mask[idx]
    full = exp.mask.size(1)
    width = max(1, int(mask.sum(1).max())) if trim else full
    attn = exp.attention_mask[idx]
    start = int(first_true_indices(attn.bool()).min()) if trim else 0
    stop = attn.size(1) - (full - width)
    cols = slice(start, stop)
    tok = slice(0, width)
    return {
        "input_ids": exp.query_responses[idx, cols],
        "attention_mask": attn[:, cols],
        "position_ids": exp.position_ids[idx, cols],
        "width": width,
        "responses": exp.responses[idx, tok],
        "mask": mask[:, tok],
        "logprobs": exp.logprobs[idx, tok],
        "values": exp.values[idx, tok],
        "advantages": exp.advantages[idx, tok],
        "returns": exp.returns[idx, tok],
        "trunk": None if exp.trunk is None else exp.trunk[idx, cols],
    }


def optimize(acc, nets, optimizer, exp: rollout.Experience, s: dict, plan: Plan, params: list, graph=None) -> dict:
    """The PPO epochs over one buffer; returns the update's averaged training statistics.

    `nets` is `(actor, critic)` as prepared by accelerate. Per micro-batch the value loss is
    backpropagated, then the policy loss: together the gradient of `loss_p + vf_coef * loss_v`.
    `graph` is the rollout's critic forward with gradients (see `rollout.collect`): the first
    epoch's single micro-batch backpropagates through it instead of running it again.
    """
    import torch

    from alignctl import rlmath

    actor, critic = nets
    temperature = float(s["temperature"])
    stats: dict[str, list[float]] = {}

    def add(key: str, value) -> None:
        stats.setdefault(key, []).append(float(value))

    mini = plan.micro * plan.accum
    for epoch in range(int(s["num_ppo_epochs"])):
        order = torch.randperm(exp.size)
        for m0 in range(0, exp.size, mini):
            rows = order[m0 : m0 + mini]
            for k, u0 in enumerate(range(0, len(rows), plan.micro)):
                reuse = graph is not None and epoch == 0
                if reuse:
                    rows = torch.arange(exp.size)  # the rollout's critic forward covered the batch in order
                mb = _micro_batch(exp, rows[u0 : u0 + plan.micro], trim=not reuse)
                cols = (mb["input_ids"], mb["attention_mask"], mb["position_ids"], mb["width"])
                last = k == plan.accum - 1 or u0 + plan.micro >= len(rows)
                with ExitStack() as stack:
                    if not last:  # accumulate locally; gradients are all-reduced on the last micro-batch
                        stack.enter_context(acc.no_sync(actor))
                        stack.enter_context(acc.no_sync(critic))
                    vpred = graph if reuse else critic(*cols, trunk=mb["trunk"])
                    vf, vf_clipfrac = rlmath.value_loss(
                        vpred, mb["values"], mb["returns"], mb["mask"], float(s["cliprange_value"])
                    )
                    acc.backward(float(s["vf_coef"]) * vf / plan.accum)
                    del vpred
                    graph = None
                    logits = actor(*cols)
                    new_logprobs = rlmath.logprobs_from_logits(logits, mb["responses"], temperature)
                    pg, clipfrac, approxkl = rlmath.policy_loss(
                        new_logprobs, mb["logprobs"], mb["advantages"], mb["mask"], float(s["cliprange"])
                    )
                    acc.backward(pg / plan.accum)
                with torch.no_grad():
                    entropy = _entropy(logits.detach(), mb["mask"], temperature)
                    del logits
                    ratio = torch.exp(new_logprobs.detach() - mb["logprobs"])
                    ratio_mean = rlmath.masked_mean(ratio, mb["mask"])
                add("policy/approxkl_avg", approxkl)
                add("policy/clipfrac_avg", clipfrac)
                add("loss/policy_avg", pg.detach())
                add("loss/value_avg", vf.detach())
                add("val/clipfrac_avg", vf_clipfrac)
                add("policy/entropy_avg", entropy)
                add("val/ratio", ratio_mean)
                add("val/ratio_var", rlmath.masked_mean((ratio - ratio_mean) ** 2, mb["mask"]))
            if s.get("max_grad_norm"):
                acc.clip_grad_norm_(params, float(s["max_grad_norm"]))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return {k: sum(v) / len(v) for k, v in stats.items()}


def _entropy(logits, mask, temperature: float) -> float:
    """Mean entropy over real tokens, one row at a time (a few [T, V] temporaries, not [B, T, V])."""
    import torch

    from alignctl import rlmath

    rows = [rlmath.entropy_from_logits(row / (temperature + 1e-7)) for row in logits]
    return float(rlmath.masked_mean(torch.stack(rows), mask))


def rollout_stats(exp: rollout.Experience, s: dict) -> dict[str, float]:
    """TRL's objective/* metrics of one rollout (sums over a response, means over responses)."""
    import torch

    real = exp.mask.bool()
    non_score = (-float(s["kl_coef"]) * exp.kl).sum(1).mean()
    return {
        "objective/kl": float(exp.kl.sum(1).mean()),
        "objective/entropy": float(torch.where(real, -exp.logprobs, torch.zeros_like(exp.logprobs)).sum(1).mean()),
        "objective/non_score_reward": float(non_score),
        "objective/rlhf_reward": float(non_score + exp.scores.mean()),
        "objective/scores": float(exp.scores.mean()),
        "val/num_eos_tokens": float(exp.has_eos.sum()),
        "val/response_length": float(exp.mask.sum(1).float().mean()),
    }


# --------------------------------------------------------------------------------------------
# Checkpoints


# --------------------------------------------------------------------------------------------
# The loop


class _Bar:
    """A rich progress bar on stderr (rank 0 only), one tick per update."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("[bold]ppo[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        )
        self.bar.start()
        self.task = self.bar.add_task("ppo", total=total, completed=done, status="")

    def update(self, done: int, row: dict) -> None:
        if self.bar is not None:
            status = f"score {row['objective/scores']:.3f}  kl {row['objective/kl']:.3f}"
            self.bar.update(self.task, completed=done, status=status)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _crash_injection(update: int) -> None:
    """The project's resume-test aid (ALIGNCTL_CRASH_AFTER_STEP=N, as in training/callbacks.py): SIGKILL once
    checkpoint N is on disk, so the test sees what a preempted job leaves behind."""
    after = os.environ.get("ALIGNCTL_CRASH_AFTER_STEP")
    if after and update >= int(after):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _finite(row: dict) -> dict:
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in row.items()}


def train(
    acc,
    roles: roles_mod.Roles,
    prompt_ids: list[list[int]],
    records: list[dict],
    s: dict,
    tok: rollout.Tokens,
    run: Run,
    *,
    source=None,
    budget: Budget | None = None,
    engine=None,
) -> dict[str, Any]:
    """Run every update (continuing from `run.resume_from`) or until `budget` (--max-minutes) is
    spent; returns the final metrics. `engine`: alignctl's vLLM rollout engine samples, and takes
    the policy's weights after every update (and after a resumed run loads its checkpoint)."""
    import torch
    from transformers import get_scheduler

    plan = make_plan(s, len(prompt_ids), acc.num_processes)
    rank, main = acc.process_index, acc.is_main_process
    actor, critic, both = roles_mod.trainable_modules(roles)
    policy_params = [p for p in roles.policy.parameters() if p.requires_grad]
    value_params = [p for m in (roles.critic, roles.value_head) for p in m.parameters() if p.requires_grad]
    lr = float(s["learning_rate"])
    value_lr = float(s.get("value_learning_rate") or lr)
    groups = [{"params": policy_params, "lr": lr}, {"params": value_params, "lr": value_lr}]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=float(s["weight_decay"]), eps=float(s["adam_epsilon"]))
    scheduler = get_scheduler(
        str(s["lr_scheduler_type"]),
        optimizer,
        num_warmup_steps=int(s["warmup_steps"]),
        num_training_steps=plan.num_updates,
    )
    start, steps = 0, 0
    if run.resume_from:
        state = load_checkpoint(run.resume_from, both, optimizer, scheduler, plan)
        start, steps = int(state["update"]), int(state["global_step"])
    actor, critic, optimizer = acc.prepare(actor, critic, optimizer)
    for m in (roles.ref, roles.reward_body, roles.reward_head):
        if m is not None:
            m.to(acc.device)
    params = policy_params + value_params
    # One micro-batch per mini-batch and one mini-batch: the first PPO step's critic forward is the
    # whole local batch at the rollout's weights, so the rollout computes it once, with gradients.
    fuse = critic if plan.accum == 1 and plan.mini_batches == 1 else None
    before = 0.0  # a resumed run's elapsed continues from its checkpoint's (docs/formats.md)
    if main:
        from alignctl.training import trim_metrics_for_resume

        trim_metrics_for_resume(run)
        before = elapsed_before_resume(run)
        console.print(
            f"ppo: {plan.num_updates} updates x {plan.batch_size} episodes "
            f"({plan.world} process{'es' if plan.world > 1 else ''}, {plan.local_batch} prompts each; "
            f"{int(s['num_ppo_epochs'])} PPO epochs x {plan.mini_batches} mini-batches)"
            + (f"; resuming after update {start}" if start else "")
        )
    bar = _Bar(plan.num_updates, start, main)
    row: dict[str, Any] = {}
    started = time.perf_counter()
    warned = False
    budget = budget or Budget(None)
    done = start
    try:
        for update in range(start + 1, plan.num_updates + 1):
            budget.begin_step(update - 1)
            t0 = time.perf_counter()
            _seed(int(s["seed"]), update, rank)
            idx = rollout.batch_indices(update - 1, plan.batch_size, len(prompt_ids), int(s["seed"]))
            mine = idx[rank * plan.local_batch : (rank + 1) * plan.local_batch]
            batch = [prompt_ids[i] for i in mine], [records[i] for i in mine]
            sampling = {}
            if engine is not None:
                if update == start + 1 and start > 0:  # resumed: the checkpoint's weights, not the model dir's
                    engine.sync(roles.policy)
                tag = f"ppo:{update}:{rank}"
                sampling = {"engine": engine, "seeds": [row_seed(int(s["seed"]), tag, i) for i in range(len(mine))]}
            exp, graph = rollout.collect(
                roles, *batch, s, tok, source=source, device=acc.device, critic=fuse, **sampling
            )
            t1 = time.perf_counter()
            lr_now = scheduler.get_last_lr()[0]
            metrics = {
                **rollout_stats(exp, s),
                **optimize(acc, (actor, critic), optimizer, exp, s, plan, params, graph),
            }
            scheduler.step()
            steps += int(s["num_ppo_epochs"]) * plan.mini_batches
            sync_s = engine.sync(roles.policy) if engine is not None and update < plan.num_updates else 0.0
            keys = sorted(metrics)
            reduced = acc.reduce(torch.tensor([metrics[k] for k in keys], device=acc.device), reduction="mean")
            metrics = dict(zip(keys, reduced.tolist(), strict=True))
            metrics["val/num_eos_tokens"] *= plan.world  # a count: the sum over processes
            t2 = time.perf_counter()
            row = {"step": update, "episode": update * plan.batch_size, "lr": lr_now, **metrics}
            row.update({"time/rollout": t1 - t0, "time/update": t2 - t0})
            if engine is not None:
                row["time/weight_sync"] = sync_s
            stop = budget.end_step(update, last=update == plan.num_updates)  # the same answer on every rank
            row["elapsed"] = elapsed(budget, before)  # after end_step: the update's end, as TRL stages
            if main:
                if not warned and not all(math.isfinite(v) for v in metrics.values()):
                    warn(f"non-finite metrics at update {update} (written as null): lower the learning rate?")
                    warned = True
                with open(run.metrics_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(_finite(row)) + "\n")
                if acc.trackers:  # --report-to: tensorboard, wandb, ... (accelerate's trackers)
                    acc.log({k: v for k, v in _finite(row).items() if v is not None}, step=update)
                bar.update(update, row)
            del exp
            done = update
            save_steps = s.get("save_steps")
            if save_steps and update % int(save_steps) == 0 and update < plan.num_updates and not stop:
                if main:
                    state = {
                        "update": update,
                        "episode": update * plan.batch_size,
                        "global_step": steps,
                        "batch_size": plan.batch_size,
                        "world_size": plan.world,
                    }
                    save_checkpoint(run.work, update, both, optimizer, scheduler, state, s.get("save_total_limit"))
                acc.wait_for_everyone()
                _crash_injection(update)
            if stop:
                break
    finally:
        bar.close()
    final = {
        k: v for k, v in row.items() if k not in ("step", "elapsed") and isinstance(v, int | float) and math.isfinite(v)
    }
    final.update(
        updates=done,
        episodes=done * plan.batch_size,
        global_step=steps,
        train_runtime=round(time.perf_counter() - started, 3),
        train_seconds=round(budget.seconds, 3),
    )
    return final
