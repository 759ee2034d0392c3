"""Train a policy with GRPO on prompts and reward sources (TRL's GRPOTrainer), the chapter's "强化学习 GRPO 训练".

    alignctl grpo --prompts prompts.jsonl --reward rule:accuracy -o runs/grpo
    alignctl grpo --prompts p.jsonl --reward rm:runs/rm --reward rule:format --reward-weights 1,0.5

For each prompt the policy samples `num_generations` answers; each answer's reward is the
weighted sum of the reward sources, and its advantage is normalised within its group,
A_i = (r_i - mean(r)) / (std(r) + 1e-4) (the chapter's formula, compared with TRL in tests/test_grpo.py), so
no value model is needed. Extra columns of the prompts file (e.g. `answer`) reach the reward
functions. The chapter's preset: 8 generations, temperature 0.9, 256 new tokens, beta 0.04,
prompts capped at 512 tokens, vLLM generation. TRL 1.16 dropped `max_prompt_length`; alignctl
keeps it, counted in tokens of the rendered prompt (chat template included, `alignctl.prompts`):
longer prompts are truncated from the left with a printed count, or rejected with `--strict`.
vLLM runs only where it is installed and CUDA is present; otherwise one printed line and
transformers generation (with the KV cache: gradient checkpointing stays off on CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from alignctl.config import Resolved
from alignctl.flags import Opts, Split
from alignctl.rewards.trl_adapters import REWARD_HELP
from alignctl.settings import OnlineSettings, setting

NAME = "grpo"
TRAINER = "GRPO"  # TRL's GRPOTrainer: the other GRPOConfig fields are settings too


@dataclass
class Settings(OnlineSettings):
    """Built-in defaults (TRL's names where TRL has the setting); the `grpo` preset adds the chapter's."""

    num_generations: int = setting(8, "Answers sampled per prompt, the group size G (chapter: 8).", flag=True)
    temperature: float = setting(1.0, "Sampling temperature (chapter: 0.9).", flag=True)
    max_completion_length: int = setting(256, "New tokens per answer (chapter: 256).", flag=True)
    max_prompt_length: int | None = setting(
        512, "Tokens of the rendered prompt, chat template included (chapter: 512; TRL 1.16 dropped it).", flag=True
    )
    beta: float = setting(0.0, "Per-token KL coefficient (chapter: 0.04; TRL default 0).", flag=True)
    epsilon: float = setting(0.2, "PPO-style clip range of the policy ratio.")
    num_iterations: int = setting(1, "Optimisation passes per generated batch (μ).")
    loss_type: str = setting("dapo", "TRL loss_type: grpo, dapo, dr_grpo, bnpo, ...")
    scale_rewards: str = setting("group", "group (the chapter's std), batch or none.")
    mask_truncated_completions: bool = False
    per_device_train_batch_size: int = setting(8, "Completions per device per step (prompts x generations).")
    generation_batch_size: int | None = setting(None, "Completions generated at once; a multiple of num_generations.")
    log_completions: bool = False
    lora_alpha: int = setting(32, "LoRA alpha.", flag=True)


def fix_batch_sizes(resolved: Resolved, world_size: int = 1) -> None:
    """Make the generation batch hold whole groups, with a printed note instead of TRL's ValueError.

    TRL needs `generation_batch_size` (default: batch x processes x grad-accum) divisible by
    `num_generations` and by the global batch. The smallest such size is their least common
    multiple; gradient accumulation stays as the user set it.
    """
    from alignctl.console import note
    from alignctl.errors import InputError

    g = resolved["num_generations"]
    if g < 2:
        raise InputError(f"num_generations={g}: GRPO compares answers within a group, it needs at least 2")
    global_batch = resolved["per_device_train_batch_size"] * world_size
    gen = resolved["generation_batch_size"] or global_batch * resolved["gradient_accumulation_steps"]
    step = math.lcm(g, global_batch)
    if gen % step == 0:
        return
    fixed = math.ceil(gen / step) * step
    resolved.override("generation_batch_size", fixed, "auto: a multiple of num_generations and the batch")
    note(
        f"generation_batch_size {gen} -> {fixed}: it must hold whole groups of num_generations={g} "
        f"and be a multiple of the batch ({global_batch})"
    )


def run(
    resolved: Resolved,
    prompts: Path,
    rewards: list[str],
    model: str | None,
    output: Path,
    *,
    strict: bool = False,
    trust_remote_code: bool = False,
    split: str | None = None,
    **switches: bool,
) -> Path:
    """Train and save the policy; returns the output dir. Inputs and reward specs are checked first.

    `switches`: overwrite, force, resume, merge (flags.Opts.switches()).
    """
    from alignctl import training
    from alignctl.rewards import trl_adapters

    sources = trl_adapters.parse_rewards(rewards, trust_remote_code=trust_remote_code)
    trl_adapters.check_weights(resolved["reward_weights"], len(sources))
    fix_batch_sizes(resolved, world_size=_world_size())
    where = (NAME, TRAINER, resolved, prompts, model, output)
    return training.fit_online(
        *where,
        reward_funcs=lambda run: trl_adapters.reward_funcs(sources),
        described=[s.describe() for s in sources],
        strict=strict,
        trust_remote_code=trust_remote_code,
        split=split,
        **switches,
    )


def _world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def command(
    prompts: Annotated[
        Path,
        typer.Option(
            "--prompts",
            "-p",
            help="Prompts (JSONL, Parquet, JSON array, dataset dir, hub id); extra columns reach the rewards.",
        ),
    ],
    reward: Annotated[
        list[str] | None, typer.Option("--reward", "-r", help=f"Reward source (repeatable): {REWARD_HELP}.")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Reject prompts over max_prompt_length instead of truncating them.")
    ] = False,
    split: Split = None,
    *,
    resolved: Resolved,
    opts: Opts,
) -> Path:
    """Train a policy with GRPO on prompts and reward sources (TRL GRPOTrainer)."""
    return run(resolved, prompts, reward or [], opts.model, opts.output, strict=strict, split=split, **opts.switches())
