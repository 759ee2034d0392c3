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

from dataclasses import dataclass
from pathlib import Path

from alignctl.config import Resolved
from alignctl.flags import Opts, Prompts, Rewards, Split, Strict
from alignctl.settings import OnlineSettings, setting
from alignctl.training.trainers import TRLTrainer

NAME = "grpo"
TRAINER = TRLTrainer("GRPO", records="prompts")  # TRL's GRPOTrainer: the other GRPOConfig fields are settings too
# what TRL 1.16's GRPOTrainer takes where its config declares no choices (tests/test_domains.py
# compares them with the trainer's source)
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo", "vespo", "luspo")
SCALINGS = ("group", "batch", "none")


@dataclass
class Settings(OnlineSettings):
    """Built-in defaults (TRL's names where TRL has the setting); the `grpo` preset adds the chapter's."""

    num_generations: int = setting(8, "Answers sampled per prompt, the group size G (chapter: 8).", flag=True)
    temperature: float = setting(1.0, "Sampling temperature (chapter: 0.9).", flag=True)
    max_completion_length: int = setting(256, "New tokens per answer (chapter: 256).", flag=True)
    max_prompt_length: int | None = setting(
        512, "Tokens of the rendered prompt, chat template included (chapter: 512; TRL 1.16 dropped it).", flag=True
    )
    beta: float = setting(
        0.0, "Per-token KL coefficient (chapter: 0.04; TRL default 0: no KL term).", flag=True, domain=">= 0"
    )
    epsilon: float = setting(0.2, "PPO-style clip range of the policy ratio.")
    num_iterations: int = setting(1, "Optimisation passes per generated batch (μ).")
    loss_type: str = setting("dapo", "TRL loss_type: grpo, dapo, dr_grpo, bnpo, ...", choices=LOSS_TYPES)
    scale_rewards: str = setting("group", "group (the chapter's std), batch or none.", choices=SCALINGS)
    mask_truncated_completions: bool = False
    per_device_train_batch_size: int = setting(8, "Completions per device per step (prompts x generations).")
    generation_batch_size: int | None = setting(None, "Completions generated at once; a multiple of num_generations.")
    log_completions: bool = False
    lora_alpha: int = setting(32, "LoRA alpha.", flag=True)


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

    return training.fit_on_rewards(
        stage=NAME,
        trainer=TRAINER,
        resolved=resolved,
        prompts=prompts,
        rewards=rewards,
        model=model,
        output=output,
        strict=strict,
        trust_remote_code=trust_remote_code,
        split=split,
        **switches,
    )


def command(
    prompts: Prompts,
    reward: Rewards = None,
    strict: Strict = False,
    split: Split = None,
    *,
    resolved: Resolved,
    opts: Opts,
) -> Path:
    """Train a policy with GRPO on prompts and reward sources (TRL GRPOTrainer)."""
    return run(resolved, prompts, reward or [], opts.model, opts.output, strict=strict, split=split, **opts.switches())
