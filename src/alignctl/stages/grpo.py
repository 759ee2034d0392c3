"""Train a policy with GRPO on prompts and reward sources (TRL's GRPOTrainer), the chapter's "强化学习 GRPO 训练".

    alignctl grpo --prompts prompts.jsonl --reward rule:accuracy -o runs/grpo
    alignctl grpo --prompts p.jsonl --reward rm:runs/rm --reward rule:format --reward-weights 1,0.5

For each prompt the policy samples `num_generations` answers; each answer's reward is the
weighted sum of the reward sources, and its advantage is normalised within its group,
A_i = (r_i - mean(r)) / (std(r) + 1e-4) (the chapter's formula, compared with TRL in tests/test_grpo.py), so
no value model is needed. Extra columns of the prompts file (e.g. `answer`) reach the reward
functions. The chapter's preset: 8 generations, temperature 0.9, 256 new tokens, beta 0.04,
prompts capped at 512 tokens, vLLM generation. TRL 1.16 dropped `max_prompt_length`; alignctl
keeps it: longer prompts are truncated from the left with a printed count, or rejected with
`--strict`. vLLM runs only where it is installed and CUDA is present; otherwise one printed line
and transformers generation (with the KV cache: gradient checkpointing stays off on CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from alignctl import options
from alignctl.config import Resolved, adjust_for_device
from alignctl.stages.rl_common import REWARD_HELP

STAGE = "grpo"


@dataclass
class Settings:
    """Built-in defaults (TRL's names where TRL has the setting); the `grpo` preset adds the chapter's."""

    num_generations: int = field(default=8, metadata={"help": "Answers sampled per prompt (the group size G)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (chapter: 0.9)."})
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_completion_length: int = field(default=256, metadata={"help": "New tokens per answer."})
    max_prompt_length: int | None = field(
        default=512, metadata={"help": "alignctl's own (TRL 1.16 dropped it): longer prompts are cut from the left."}
    )
    chat_template: bool = field(
        default=True, metadata={"help": "Send plain-text prompts as a user message through the chat template."}
    )
    beta: float = field(default=0.0, metadata={"help": "Per-token KL coefficient (chapter: 0.04; TRL default 0)."})
    epsilon: float = field(default=0.2, metadata={"help": "PPO-style clip range of the policy ratio."})
    num_iterations: int = field(default=1, metadata={"help": "Optimisation passes per generated batch (μ)."})
    loss_type: str = field(default="dapo", metadata={"help": "TRL loss_type: grpo, dapo, dr_grpo, bnpo, ..."})
    scale_rewards: str = field(default="group", metadata={"help": "group (the chapter's std), batch or none."})
    mask_truncated_completions: bool = False
    reward_weights: list[float] | None = field(default=None, metadata={"help": "One weight per --reward."})
    learning_rate: float = 1e-6
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Completions per device per step (prompts x generations)."}
    )
    gradient_accumulation_steps: int = 1
    generation_batch_size: int | None = field(
        default=None, metadata={"help": "Completions generated at once; a multiple of num_generations."}
    )
    num_train_epochs: float = 1.0
    max_steps: int = -1
    optim: str = "adamw_torch"
    warmup_steps: int = 0
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    bf16: bool = False
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Off by default: on CPU it only slows training (design.md)."}
    )
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_gpu_memory_utilization: float = 0.3
    vllm_server_base_url: str | None = field(
        default=None, metadata={"help": "vllm_mode=server: the `trl vllm-serve` URL (else host and port)."}
    )
    vllm_server_host: str = "0.0.0.0"
    vllm_server_port: int = 8000
    vllm_server_timeout: float = 240.0
    vllm_tensor_parallel_size: int = field(
        default=1, metadata={"help": "vllm_mode=colocate only; a server takes --tensor-parallel-size itself."}
    )
    log_completions: bool = False
    logging_steps: int = 1
    save_steps: int | None = 500
    save_total_limit: int | None = 2
    seed: int = 42
    report_to: str = "none"
    use_peft: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None


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


def trl_config() -> type:
    """TRL's GRPOConfig: its other fields are settings too (`--set key=value`, presets, --config)."""
    from trl import GRPOConfig

    return GRPOConfig


def run(
    resolved: Resolved,
    prompts: Path,
    rewards: list[str],
    model: str | None,
    output: Path,
    *,
    strict: bool = False,
    overwrite: bool = False,
    force: bool = False,
    resume: bool = False,
    merge: bool = True,
    trust_remote_code: bool = False,
) -> Path:
    """Train and save the policy; returns the output dir. Inputs and reward specs are checked first."""
    from alignctl import models, runs, training
    from alignctl.stages import rl_common

    records = rl_common.read_prompts(prompts)
    sources = rl_common.parse_rewards(rewards, trust_remote_code=trust_remote_code)
    rl_common.check_weights(resolved["reward_weights"], len(sources))
    model_path = models.resolve_model(model)
    torch = models.setup_torch()  # flush-denormal before torch starts any thread (design.md)
    tokenizer = models.load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    rl_common.apply_chat_format(records, tokenizer, enabled=resolved["chat_template"], path=prompts)
    truncated = rl_common.fit_prompts(records, tokenizer, resolved["max_prompt_length"], strict=strict, path=prompts)
    dataset = rl_common.prompts_dataset(records, prompts)
    fix_batch_sizes(resolved, world_size=_world_size())

    inputs = {"prompts": runs.input_fingerprint(prompts), "model": runs.input_fingerprint(model_path)}
    described = [s.describe() for s in sources]
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
    rl_common.adjust_checkpointing(resolved, cuda=cuda)
    from trl import GRPOConfig, GRPOTrainer

    funcs = rl_common.reward_funcs(sources)
    policy = models.load_causal_lm(model_path, trust_remote_code=trust_remote_code)
    args = GRPOConfig(**training.trl_kwargs(GRPOConfig, resolved, run_))
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=models.lora_config(resolved.values) if resolved["use_peft"] else None,
        callbacks=training.callbacks(run_),
    )
    final = training.train(trainer, run_)
    training.save_final(trainer, tokenizer, run_, merge=merge)
    return run_.finish(
        final,
        extra={"records": {"prompts": len(records), "truncated": truncated}, "rewards": described},
    )


def _world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def command(
    prompts: Annotated[Path, typer.Option("--prompts", "-p", help="Prompts JSONL; extra columns reach the rewards.")],
    reward: Annotated[
        list[str] | None, typer.Option("--reward", "-r", help=f"Reward source (repeatable): {REWARD_HELP}.")
    ] = None,
    reward_weights: Annotated[
        str | None, typer.Option("--reward-weights", help="Comma-separated weights, one per --reward (e.g. 1,0.5).")
    ] = None,
    num_generations: Annotated[
        int | None, typer.Option("--num-generations", help="Answers per prompt (chapter: 8).")
    ] = None,
    beta: Annotated[float | None, typer.Option("--beta", help="KL coefficient (chapter: 0.04).")] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help="Sampling temperature (chapter: 0.9).")
    ] = None,
    max_completion_length: Annotated[
        int | None, typer.Option("--max-completion-length", help="New tokens per answer (chapter: 256).")
    ] = None,
    max_prompt_length: Annotated[
        int | None, typer.Option("--max-prompt-length", help="Prompt token cap (chapter: 512).")
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
    """Train a policy with GRPO on prompts and reward sources (TRL GRPOTrainer)."""
    from alignctl.stages.rl_common import parse_weights

    resolved = options.settings(
        STAGE,
        locals(),
        reward_weights=(parse_weights(reward_weights), "--reward-weights"),
        num_generations=(num_generations, "--num-generations"),
        beta=(beta, "--beta"),
        temperature=(temperature, "--temperature"),
        max_completion_length=(max_completion_length, "--max-completion-length"),
        max_prompt_length=(max_prompt_length, "--max-prompt-length"),
    )
    out = run(
        resolved,
        prompts,
        reward or [],
        model,
        output or Path("runs") / STAGE,
        strict=strict,
        **options.run_switches(locals()),
    )
    print(out)
