"""Train a policy with Online DPO: it samples two answers per prompt and a reward source picks (TRL).

    alignctl online-dpo --prompts prompts.jsonl --reward rm:runs/rm -o runs/online-dpo
    alignctl online-dpo --prompts prompts.jsonl --judge-url http://127.0.0.1:8000/v1 --judge-model qwen

The chapter's "Online DPO 优化": prompts only, no preference file. Each step the policy samples
two answers per prompt; a reward model (`--reward rm:PATH`), a rule (`--reward rule:NAME`) or
a pairwise LLM judge (`--judge MODEL`, or `--judge-url` + `--judge-model` for an
OpenAI-compatible endpoint) decides which is chosen, and the pair is trained on with DPO's loss
at once. TRL's `OnlineDPOTrainer` (in `trl.experimental`, imported through `alignctl.training`)
takes reward functions only; the judge reaches it as one (`JudgeReward`). Judge verdicts are
written to `judged.jsonl` in the output dir. Generation uses the KV cache: gradient
checkpointing stays off on CPU (with it on, TRL generates without the cache, ~10x slower).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from alignctl.config import Resolved, adjust_for_device
from alignctl.errors import AlignctlError, InputError
from alignctl.flags import Opts, Split
from alignctl.settings import OnlineSettings, setting
from alignctl.stages.rl_common import REWARD_HELP

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


class JudgeReward:
    """A pairwise judge as a reward function for TRL's OnlineDPOTrainer (which has no judge argument).

    How TRL 1.16 uses it: each step samples two answers per prompt and calls every reward
    function once with `prompts = batch + batch` and `completions = first answers + second
    answers`, so completion `i` and completion `i + B` answer the same prompt (B = the batch).
    It then sums the weighted rewards and keeps as chosen the answer with the higher reward, the
    first one on a tie. This function asks the judge about each pair (i, i + B), in both orders
    (`PairwiseJudge`), and returns 1.0 to the winner and 0.0 to the loser, or 0.5 to both on a
    tie (the two orders disagreed, or a reply held no clear letter). So TRL's chosen answer is
    exactly the judge's pick; a tie gives a zero score margin and TRL's first-answer default.
    Every verdict is appended to `log_path` (JSONL) when given.
    """

    __name__ = "judge"

    def __init__(self, judge, log_path: Path | None = None) -> None:
        self.judge = judge
        self.log_path = log_path
        self.pairs = 0
        self.ties = 0
        self.calls = 0

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        n = len(completions)
        if n % 2 or len(prompts) != n:
            raise AlignctlError(f"judge reward: expected two answers per prompt, got {len(prompts)} / {n}")
        half = n // 2
        rewards = [0.5] * n
        rows = []
        for i in range(half):
            verdict = self.judge.judge(prompts[i], completions[i], completions[i + half])
            if verdict.winner is not None:
                rewards[i], rewards[i + half] = (1.0, 0.0) if verdict.winner == 0 else (0.0, 1.0)
            else:
                self.ties += 1
            rows.append(
                {
                    "call": self.calls,
                    "prompt": prompts[i],
                    "completions": [completions[i], completions[i + half]],
                    "rewards": [rewards[i], rewards[i + half]],
                    "verdict": verdict.to_dict(),
                }
            )
        self.pairs += half
        self.calls += 1
        if self.log_path is not None:
            from alignctl import io

            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.writelines(io.dumps(r) + "\n" for r in rows)
        return rewards

    def stats(self) -> dict[str, float]:
        return {"judge_pairs": self.pairs, "judge_tie_rate": self.ties / self.pairs if self.pairs else 0.0}


def build_judge(
    judge: str | None,
    judge_url: str | None,
    judge_model: str | None,
    judge_template: Path | None = None,
    judge_key_env: str = "OPENAI_API_KEY",
):
    """The `PairwiseJudge` the flags name (as `label --by judge:...` builds it), or None. Loads no model."""
    from alignctl.rewards import resolve_source

    if judge is None and judge_url is None:
        if judge_model or judge_template:
            raise InputError("--judge-model / --judge-template need --judge-url (or --judge MODEL)")
        return None
    source = resolve_source(
        f"judge:{judge}" if judge else "judge",
        judge_url=judge_url,
        judge_model=judge_model,
        judge_key_env=judge_key_env,
        judge_template=judge_template,
    )
    return source.judge


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
    split: str | None = None,
) -> Path:
    """Train and save the policy; returns the output dir.

    The reward source is `rewards` (rule/rm specs, as for grpo) or `judge` (a `PairwiseJudge`),
    never both. Inputs are checked before any model loads.
    """
    from alignctl import models, readers, runs, training
    from alignctl.generation import vllm_installed
    from alignctl.prompts import prepare, prompts_dataset, read_prompts
    from alignctl.stages import rl_common

    if judge is not None and rewards:
        raise InputError("give either --reward or a judge (--judge / --judge-url), not both")
    if judge is None and not rewards:
        raise InputError(f"online-dpo needs a reward source: --reward {REWARD_HELP}, or --judge / --judge-url")
    records = read_prompts(prompts, split)
    sources = rl_common.parse_rewards(rewards, required=False, trust_remote_code=trust_remote_code)
    rl_common.check_weights(resolved["reward_weights"], len(sources) if sources else 1)
    model_path = models.resolve_model(model)
    torch = models.setup_torch()  # flush-denormal before torch starts any thread (design.md)
    tokenizer = models.load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    truncated = prepare(records, tokenizer, resolved, strict=strict, path=prompts)
    dataset = prompts_dataset(records, prompts)

    inputs = {"prompts": readers.fingerprint(prompts, split), "model": runs.input_fingerprint(model_path)}
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
    rl_common.adjust_checkpointing(resolved, cuda=cuda)
    from alignctl.training import online_dpo

    OnlineDPOConfig, OnlineDPOTrainer = online_dpo()
    judge_reward = None
    if judge is not None:
        log = run_.work / JUDGE_LOG if runs.is_main_process() else None
        judge_reward = JudgeReward(judge, log)
        funcs = [judge_reward]
    else:
        funcs = rl_common.reward_funcs(sources)
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
        Path | None, typer.Option("--judge-template", help="Judge prompt with {prompt}, {answer_a}, {answer_b}.")
    ] = None,
    judge_key_env: Annotated[
        str, typer.Option("--judge-key-env", help="Environment variable holding the endpoint's API key.")
    ] = "OPENAI_API_KEY",
    strict: Annotated[
        bool, typer.Option("--strict", help="Reject prompts over max_prompt_length instead of truncating them.")
    ] = False,
    split: Split = None,
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
        split=split,
        **opts.switches(),
    )
