"""Train a policy with Online DPO: it samples two answers per prompt and a reward source picks (TRL).

    alignctl online-dpo --prompts prompts.jsonl --reward rm:runs/rm -o runs/online-dpo
    alignctl online-dpo --prompts prompts.jsonl --judge-url http://127.0.0.1:8000/v1 --judge-model qwen

The chapter's "Online DPO 优化": prompts only, no preference file. Each step the policy samples
two answers per prompt; a reward model (`--reward rm:PATH`), a rule (`--reward rule:NAME`) or
a pairwise LLM judge (`--judge MODEL`, or `--judge-url` + `--judge-model` for an
OpenAI-compatible endpoint) decides which is chosen, and the pair is trained on with DPO's loss
at once. TRL's `OnlineDPOTrainer` (in `trl.experimental`, imported through `alignctl.trl_compat`)
takes reward functions only; the judge reaches it as one (`rewards.trl_adapters.JudgeReward`).
Judge verdicts are written to `judged.jsonl` in the output dir. Generation uses the KV cache: gradient
checkpointing stays off on CPU (with it on, TRL generates without the cache, ~10x slower).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from alignctl import options
from alignctl.config import Resolved, adjust_for_device
from alignctl.errors import InputError
from alignctl.rewards.trl_adapters import REWARD_HELP, build_judge

STAGE = "online-dpo"
JUDGE_LOG = "judged.jsonl"


@dataclass
class Settings:
    """Built-in defaults (TRL's names); the `online-dpo` preset adds the chapter's values."""

    beta: float = field(default=0.1, metadata={"help": "KL strength β in the DPO loss (chapter: 0.1)."})
    loss_type: str = field(default="sigmoid", metadata={"help": "sigmoid (the chapter's DPO) or ipo."})
    max_new_tokens: int = field(default=64, metadata={"help": "New tokens per sampled answer."})
    max_length: int = field(default=512, metadata={"help": "Prompt+answer tokens in the loss (prompt cut left)."})
    max_prompt_length: int | None = field(
        default=None, metadata={"help": "Cut longer prompts from the left before generation (--strict rejects)."}
    )
    chat_template: bool = field(
        default=True, metadata={"help": "Send plain-text prompts as a user message through the chat template."}
    )
    temperature: float = 0.9
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the reward of an answer that never ends (no EOS)."}
    )
    reward_weights: list[float] | None = field(default=None, metadata={"help": "One weight per --reward."})
    learning_rate: float = 5e-7
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Prompts per device per step."})
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 1.0
    max_steps: int = -1
    optim: str = "adamw_torch"
    warmup_steps: int = 0
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    bf16: bool = False
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Off by default: on CPU TRL then generates without the KV cache."}
    )
    use_vllm: bool = False
    vllm_mode: str = field(default="colocate", metadata={"help": "colocate (in the trainer) or server."})
    vllm_server_base_url: str | None = field(
        default=None, metadata={"help": "vllm_mode=server: the `trl vllm-serve` URL (else host and port)."}
    )
    vllm_server_host: str = "0.0.0.0"
    vllm_server_port: int = 8000
    vllm_server_timeout: float = 240.0
    vllm_tensor_parallel_size: int = field(
        default=1, metadata={"help": "vllm_mode=colocate only; a server takes --tensor-parallel-size itself."}
    )
    logging_steps: int = 1
    save_steps: int | None = 500
    save_total_limit: int | None = 2
    seed: int = 42
    report_to: str = "none"
    use_peft: bool = False
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None


def trl_config() -> type:
    """TRL's OnlineDPOConfig: its other fields are settings too (`--set key=value`, presets, --config)."""
    from alignctl.trl_compat import online_dpo

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
    from alignctl import io, models, runs, training
    from alignctl.rewards import trl_adapters
    from alignctl.stages import rl_common

    if judge is not None and rewards:
        raise InputError("give either --reward or a judge (--judge / --judge-url), not both")
    if judge is None and not rewards:
        raise InputError(f"online-dpo needs a reward source: --reward {REWARD_HELP}, or --judge / --judge-url")
    records = [dict(r) for r in io.load(prompts, "prompts")]  # apply_chat_format edits them
    sources = trl_adapters.parse_rewards(rewards, required=False, trust_remote_code=trust_remote_code)
    trl_adapters.check_weights(resolved["reward_weights"], len(sources) if sources else 1)
    model_path = models.resolve_model(model)
    torch = models.setup_torch()  # flush-denormal before torch starts any thread (design.md)
    tokenizer = models.load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    rl_common.apply_chat_format(records, tokenizer, enabled=resolved["chat_template"], path=prompts)
    truncated = rl_common.fit_prompts(records, tokenizer, resolved["max_prompt_length"], strict=strict, path=prompts)
    dataset = rl_common.prompts_dataset(records, prompts)

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
    adjust_for_device(resolved, cuda=cuda, vllm=rl_common.vllm_installed())
    training.adjust_checkpointing(resolved, cuda=cuda)
    from alignctl.trl_compat import online_dpo

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
    reward_weights: Annotated[
        str | None, typer.Option("--reward-weights", help="Comma-separated weights, one per --reward.")
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
    beta: Annotated[float | None, typer.Option("--beta", help="β, the KL strength (chapter: 0.1).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="New tokens per answer.")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Sampling temperature.")] = None,
    max_prompt_length: Annotated[
        int | None, typer.Option("--max-prompt-length", help="Prompt token cap (longer ones are cut from the left).")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Reject prompts over max_prompt_length instead of truncating them.")
    ] = False,
    model: options.Model = None,
    output: options.Output = None,
    overwrite: options.Overwrite = False,
    force: options.Force = False,
    preset: options.Preset = None,
    config_file: options.ConfigFile = None,
    set_: options.Set = None,
    seed: options.Seed = None,
    max_steps: options.MaxSteps = None,
    epochs: options.Epochs = None,
    learning_rate: options.LearningRate = None,
    batch_size: options.BatchSize = None,
    resume: options.Resume = False,
    no_merge: options.NoMerge = False,
    report_to: options.ReportTo = None,
    trust_remote_code: options.TrustRemoteCode = False,
) -> None:
    """Train a policy with Online DPO (TRL OnlineDPOTrainer): two samples per prompt, a reward source picks."""
    from alignctl.rewards.trl_adapters import parse_weights

    resolved = options.settings(
        STAGE,
        locals(),
        reward_weights=(parse_weights(reward_weights), "--reward-weights"),
        beta=(beta, "--beta"),
        max_new_tokens=(max_new_tokens, "--max-new-tokens"),
        temperature=(temperature, "--temperature"),
        max_prompt_length=(max_prompt_length, "--max-prompt-length"),
    )
    pairwise = build_judge(judge, judge_url, judge_model, judge_template, judge_key_env)
    out = run(
        resolved,
        prompts,
        model,
        output or Path("runs") / STAGE,
        rewards=reward,
        judge=pairwise,
        strict=strict,
        **options.run_switches(locals()),
    )
    print(out)
