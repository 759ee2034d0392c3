"""Train a policy with Online DPO: it samples two answers per prompt and a reward source picks (TRL).

    alignctl online-dpo --prompts prompts.jsonl --reward rm:runs/rm -o runs/online-dpo
    alignctl online-dpo --prompts prompts.jsonl --judge-url http://127.0.0.1:8000/v1 --judge-model qwen

The chapter's "Online DPO 优化": prompts only, no preference file. Each step the policy samples
two answers per prompt; a reward model (`--reward rm:PATH`), a rule (`--reward rule:NAME`) or
a pairwise LLM judge (`--judge MODEL`, or `--judge-url` + `--judge-model` for an
OpenAI-compatible endpoint) decides which is chosen, and the pair is trained on with DPO's loss
at once. TRL's `OnlineDPOTrainer` (in `trl.experimental`, declared in `TRAINER`)
takes reward functions only; the judge reaches it as one (`rewards.trl_adapters.JudgeReward`).
Judge verdicts are written to `judged.jsonl` in the output dir. Generation uses the KV cache: gradient
checkpointing stays off on CPU (with it on, TRL generates without the cache, ~10x slower).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from alignctl.config import Resolved
from alignctl.errors import InputError
from alignctl.flags import JudgeKeyEnv, JudgeModel, JudgeTemplate, JudgeUrl, Opts, Prompts, Rewards, Split, Strict
from alignctl.rewards.trl_adapters import REWARD_HELP, build_judge
from alignctl.settings import OnlineSettings, setting
from alignctl.training.trainers import TRLTrainer, masked_online_dpo_stats

NAME = "online-dpo"
# TRL's OnlineDPOTrainer, experimental in TRL 1.16, with its logged KL fixed (masked_online_dpo_stats):
# the other OnlineDPOConfig fields are settings too
TRAINER = TRLTrainer(
    "OnlineDPO",
    where="trl.experimental.online_dpo",
    reference=True,
    records="prompts",
    adapt=masked_online_dpo_stats,
)
JUDGE_LOG = "judged.jsonl"


@dataclass
class Settings(OnlineSettings):
    """Built-in defaults (TRL's names); the `online-dpo` preset adds the chapter's values."""

    beta: float = setting(0.1, "β, the KL strength in the DPO loss (chapter: 0.1).", flag=True)
    loss_type: str = setting("sigmoid", "sigmoid (the chapter's DPO) or ipo.")
    max_new_tokens: int = setting(64, "New tokens per sampled answer.", flag=True)
    max_length: int = setting(512, "Prompt+answer tokens in the loss (prompt cut left).")
    temperature: float = setting(0.9, "Sampling temperature.", flag=True)
    missing_eos_penalty: float | None = setting(
        None, "Subtracted from the reward of an answer that never ends (no EOS)."
    )
    learning_rate: float = 5e-7
    per_device_train_batch_size: int = setting(8, "Prompts per device per step.")


def run(
    resolved: Resolved,
    prompts: Path,
    model: str | None,
    output: Path,
    *,
    rewards: list[str] | None = None,
    judge=None,
    strict: bool = False,
    trust_remote_code: bool = False,
    split: str | None = None,
    **switches: bool,
) -> Path:
    """Train and save the policy; returns the output dir.

    The reward source is `rewards` (rule/rm specs, as for grpo) or `judge` (a `PairwiseJudge`),
    never both. Inputs are checked before any model loads. `switches`: overwrite, force, resume,
    merge (flags.Opts.switches()).
    """
    from alignctl import runs, training
    from alignctl.rewards import trl_adapters

    if judge is not None and rewards:
        raise InputError("give either --reward or a judge (--judge / --judge-url), not both")
    if judge is None and not rewards:
        raise InputError(f"online-dpo needs a reward source: --reward {REWARD_HELP}, or --judge / --judge-url")
    sources = trl_adapters.parse_rewards(rewards, required=False, trust_remote_code=trust_remote_code)
    trl_adapters.check_weights(resolved["reward_weights"], len(sources) if sources else 1)
    judged = []  # the judge as TRL's reward function, once the run dir exists (verdicts go to its log)

    def reward_funcs(run) -> list:
        if judge is None:
            return trl_adapters.reward_funcs(sources)
        judged.append(trl_adapters.JudgeReward(judge, run.work / JUDGE_LOG if runs.is_main_process() else None))
        return judged

    return training.fit_online(
        stage=NAME,
        trainer=TRAINER,
        resolved=resolved,
        prompts=prompts,
        model=model,
        output=output,
        reward_funcs=reward_funcs,
        described=[s.describe() for s in sources] if sources else [judge.describe()],
        sources=sources,
        strict=strict,
        trust_remote_code=trust_remote_code,
        stats=(lambda: judged[0].stats()) if judge is not None else None,
        split=split,
        **switches,
    )


def command(
    prompts: Prompts,
    reward: Rewards = None,
    judge: Annotated[
        str | None,
        typer.Option("--judge", help="Pairwise judge: a local chat model (dir or alias); with --judge-url, its name."),
    ] = None,
    judge_url: JudgeUrl = None,
    judge_model: JudgeModel = None,
    judge_template: JudgeTemplate = None,
    judge_key_env: JudgeKeyEnv = "OPENAI_API_KEY",
    strict: Strict = False,
    split: Split = None,
    *,
    resolved: Resolved,
    opts: Opts,
) -> Path:
    """Train a policy with Online DPO (TRL OnlineDPOTrainer): two samples per prompt, a reward source picks."""
    pairwise = build_judge(judge, judge_url, judge_model, judge_template, judge_key_env, opts.trust_remote_code)
    return run(
        resolved,
        prompts,
        opts.model,
        opts.output,
        rewards=reward,
        judge=pairwise,
        strict=strict,
        split=split,
        **opts.switches(),
    )
