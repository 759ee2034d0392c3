"""Train a policy with Online DPO: it samples two answers per prompt and a reward source picks (TRL).

    alignctl online-dpo --prompts prompts.jsonl --reward rm:runs/rm -o runs/online-dpo
    alignctl online-dpo --prompts prompts.jsonl --judge-url http://127.0.0.1:8000/v1 --judge-model qwen

The chapter's "Online DPO 优化": prompts only, no preference file. Each step the policy samples
two answers per prompt; a reward model (`--reward rm:PATH`), a rule (`--reward rule:NAME`) or
a pairwise LLM judge (`--judge MODEL`, or `--judge-url` + `--judge-model` for an
OpenAI-compatible endpoint) decides which is chosen, and the pair is trained on with DPO's loss
at once. TRL's `OnlineDPOTrainer` (in `trl.experimental`, imported through `alignctl.training`)
takes reward functions only; the judge reaches it as one (`rewards.trl_adapters.JudgeReward`).
Judge verdicts are written to `judged.jsonl` in the output dir. Generation uses the KV cache: gradient
checkpointing stays off on CPU (with it on, TRL generates without the cache, ~10x slower).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from alignctl.config import Resolved, adjust_for_device
from alignctl.errors import InputError
from alignctl.flags import Opts
from alignctl.rewards.trl_adapters import REWARD_HELP, build_judge
from alignctl.settings import OnlineSettings, setting

NAME = STAGE = "online-dpo"
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


def trl_config() -> type:
    """TRL's OnlineDPOConfig: its other fields are settings too (`--set key=value`, presets, --config)."""
    from alignctl.training import online_dpo

    return online_dpo()[0]


def run(
    resolved: Resolved,
    prompts: Path,
    model: str | None,
    output: Path,
    *,
    rewards: list[str] | None = None,
    judge=None,
    strict: bool = False,
    overwrite: bool = False,
    force: bool = False,
    resume: bool = False,
    merge: bool = True,
    trust_remote_code: bool = False,
) -> Path:
    """Train and save the policy; returns the output dir.

    The reward source is `rewards` (rule/rm specs, as for grpo) or `judge` (a `PairwiseJudge`),
    never both. Inputs are checked before any model loads.
    """
    from alignctl import models, runs, training
    from alignctl.generation import vllm_installed
    from alignctl.prompts import prepare, prompts_dataset, read_prompts
    from alignctl.rewards import trl_adapters

    if judge is not None and rewards:
        raise InputError("give either --reward or a judge (--judge / --judge-url), not both")
    if judge is None and not rewards:
        raise InputError(f"online-dpo needs a reward source: --reward {REWARD_HELP}, or --judge / --judge-url")
    records = read_prompts(prompts)
    sources = trl_adapters.parse_rewards(rewards, required=False, trust_remote_code=trust_remote_code)
    trl_adapters.check_weights(resolved["reward_weights"], len(sources) if sources else 1)
    model_path = models.resolve_model(model)
    torch = models.setup_torch()  # flush-denormal before torch starts any thread (design.md)
    tokenizer = models.load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    truncated = prepare(records, tokenizer, resolved, strict=strict, path=prompts)
    dataset = prompts_dataset(records, prompts)

    inputs = {"prompts": runs.input_fingerprint(prompts), "model": runs.input_fingerprint(model_path)}
    described = [s.describe() for s in sources] if sources else [judge.describe()]
    run_ = runs.begin(
        STAGE,
        output,
        inputs=inputs,
        resolved=resolved,
        overwrite=overwrite,
        force=force,
        resume=resume,
        parent_model=model or models.DEFAULT_MODEL,
        extra={"merge": merge, "rewards": described, "strict": strict},
    )
    if run_.up_to_date:
        runs.say_up_to_date(run_)
        return run_.out

    cuda = torch.cuda.is_available()
    adjust_for_device(resolved, cuda=cuda, vllm=vllm_installed())
    training.adjust_checkpointing(resolved, cuda=cuda)
    from alignctl.training import online_dpo

    OnlineDPOConfig, OnlineDPOTrainer = online_dpo()
    judge_reward = None
    if judge is not None:
        log = run_.work / JUDGE_LOG if runs.is_main_process() else None
        judge_reward = trl_adapters.JudgeReward(judge, log)
        funcs = [judge_reward]
    else:
        funcs = trl_adapters.reward_funcs(sources)
    policy = models.load_causal_lm(model_path, trust_remote_code=trust_remote_code)
    args = OnlineDPOConfig(**training.trl_kwargs(OnlineDPOConfig, resolved, run_))
    trainer = OnlineDPOTrainer(
        model=policy,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=models.lora_config(resolved.values) if resolved["use_peft"] else None,
        callbacks=training.callbacks(run_),
    )
    final = training.train(trainer, run_)
    if judge_reward is not None:
        final.update(judge_reward.stats())
    training.save_final(trainer, tokenizer, run_, merge=merge)
    return run_.finish(
        final,
        extra={"records": {"prompts": len(records), "truncated": truncated}, "rewards": described},
    )


def command(
    prompts: Annotated[Path, typer.Option("--prompts", "-p", help="Prompts JSONL (no answers needed).")],
    reward: Annotated[
        list[str] | None, typer.Option("--reward", "-r", help=f"Reward source (repeatable): {REWARD_HELP}.")
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option("--judge", help="Pairwise judge: a local chat model (dir or alias); with --judge-url, its name."),
    ] = None,
    judge_url: Annotated[
        str | None, typer.Option("--judge-url", help="Pairwise judge behind an OpenAI-compatible endpoint (.../v1).")
    ] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="Model name for --judge-url.")] = None,
    judge_template: Annotated[
        Path | None,
        typer.Option(
            "--judge-template",
            help="Judge prompt: neutral (default), concise, or a file with {prompt} {answer_a} {answer_b}.",
        ),
    ] = None,
    judge_key_env: Annotated[
        str, typer.Option("--judge-key-env", help="Environment variable holding the endpoint's API key.")
    ] = "OPENAI_API_KEY",
    strict: Annotated[
        bool, typer.Option("--strict", help="Reject prompts over max_prompt_length instead of truncating them.")
    ] = False,
    *,
    resolved: Resolved,
    opts: Opts,
) -> Path:
    """Train a policy with Online DPO (TRL OnlineDPOTrainer): two samples per prompt, a reward source picks."""
    pairwise = build_judge(judge, judge_url, judge_model, judge_template, judge_key_env)
    return run(
        resolved,
        prompts,
        opts.model,
        opts.output,
        rewards=reward,
        judge=pairwise,
        strict=strict,
        **opts.switches(),
    )
