"""Train a policy with RLOO on prompts and reward sources (TRL's RLOOTrainer): REINFORCE, leave-one-out baseline.

    alignctl rloo --prompts prompts.jsonl --reward rule:accuracy -o runs/rloo
    alignctl rloo -p p.jsonl -r rm:runs/rm -r rule:format --reward-weights 1,0.5 --num-generations 4

RLOO (Ahmadian et al. 2024, "Back to Basics", arXiv 2402.14740) samples k answers per prompt, as
GRPO does, and gives each the mean reward of the other k - 1 as its baseline:
A_i = r_i - mean_{j≠i} r_j (no value model, no division by the group's spread). TRL takes the KL to
the reference off the reward, β times the answer's summed log-ratio, where GRPO adds it to the
loss. The reward sources are grpo's (`--reward` rules, reward models, your own function, weighted
with `--reward-weights`), and so is the prompt handling: `max_prompt_length` counts the rendered
prompt's tokens, longer prompts are cut from the left or rejected with `--strict`. The preset
carries TRL 1.16's RLOO defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alignctl.config import Resolved
from alignctl.flags import Opts, Prompts, Rewards, Split, Strict
from alignctl.settings import OnlineSettings, setting
from alignctl.training.trainers import TRLTrainer

NAME = "rloo"
TRAINER = TRLTrainer("RLOO", records="prompts")  # TRL's RLOOTrainer: the other RLOOConfig fields are settings too


@dataclass
class Settings(OnlineSettings):
    """Built-in defaults (TRL's names); the `rloo` preset layers TRL's RLOO defaults on top."""

    num_generations: int = setting(
        2, "Answers sampled per prompt, k: each one's baseline is the others' mean reward (TRL: 2).", flag=True
    )
    max_completion_length: int = setting(512, "New tokens per answer (TRL: 512).", flag=True)
    beta: float = setting(
        0.05,
        "KL penalty on the reward: β x the answer's summed log-ratio (TRL: 0.05; 0: none).",
        flag=True,
        domain=">= 0",
    )
    epsilon: float = setting(0.2, "PPO-style clip range of the policy ratio.")
    num_iterations: int = setting(1, "Optimisation passes per generated batch.")
    normalize_advantages: bool = setting(False, "Also normalise the advantages over the batch (TRL: off).")
    mask_truncated_completions: bool = False
    per_device_train_batch_size: int = setting(8, "Completions per device per step (prompts x generations).")
    generation_batch_size: int | None = setting(None, "Completions generated at once; a multiple of num_generations.")
    log_completions: bool = False


def run(resolved: Resolved, prompts: Path, rewards: list[str], model: str | None, output: Path, **options) -> Path:
    """Train and save the policy; returns the output dir. Inputs and reward specs are checked before
    any model loads (training.fit_on_rewards, grpo's run too). `options`: strict, split,
    trust_remote_code, and the switches overwrite, force, resume, merge (flags.Opts.switches())."""
    from alignctl import training

    where = {"stage": NAME, "trainer": TRAINER, "resolved": resolved, "prompts": prompts, "model": model}
    return training.fit_on_rewards(**where, rewards=rewards, output=output, **options)


def command(
    prompts: Prompts,
    reward: Rewards = None,
    strict: Strict = False,
    split: Split = None,
    *,
    resolved: Resolved,
    opts: Opts,
) -> Path:
    """Train a policy with RLOO on prompts and reward sources (TRL RLOOTrainer)."""
    return run(resolved, prompts, reward or [], opts.model, opts.output, strict=strict, split=split, **opts.switches())
