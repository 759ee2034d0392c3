"""What a stage's Settings are made of: `setting()` fields, and the blocks the TRL-backed stages share.

Every Settings field carries its help text; `setting(..., flag=True)` also makes it an option of
the stage's command (flags.py derives the option from the field: one name per setting). The
blocks below hold the settings several stages share, with TRL's names and alignctl's built-in
defaults (a stage's preset layers the chapter's values on top); a stage subclasses one and
redefines a field to give it its own default or help. Only settings a stage really uses belong
in its Settings: ppo, which is not a TRL trainer, has its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    flag: bool | str | tuple[str, ...] = False,
    panel: str | None = None,
    default_factory: Any = dataclasses.MISSING,
    domain: str | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A Settings field with its help text; `flag` also makes it a command-line option (flags.py):
    True derives the name (`lora_r` -> `--lora-r`), a string or tuple names it. `domain` (`">= 0"`)
    replaces the one `domains.DOMAINS` gives the name; `choices` lists the values it takes."""
    meta: dict[str, Any] = {"help": help}
    if flag:
        meta["flag"] = flag
    if panel:
        meta["panel"] = panel
    if domain:
        meta["domain"] = domain
    if choices:
        meta["choices"] = tuple(choices)
    return field(default=default, default_factory=default_factory, metadata=meta)


@dataclass
class TRLSettings:
    """The fields of transformers' TrainingArguments every TRL-backed stage uses, plus LoRA."""

    learning_rate: float = setting(1e-6, "Optimizer learning rate.")
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 1.0
    max_steps: int = -1
    max_minutes: float | None = setting(None, "Training time budget in minutes (training/budget.py); None: none.")
    optim: str = "adamw_torch"
    warmup_steps: float = setting(0, "Warm-up steps; below 1, that fraction of the steps (transformers 5).")
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    bf16: bool = False
    gradient_checkpointing: bool = setting(False, "Off by default: on CPU it makes steps slower (docs/design.md).")
    logging_steps: int = 10
    save_steps: int | None = 500
    save_total_limit: int | None = 2
    seed: int = 42
    report_to: str = "none"
    use_peft: bool = False
    lora_r: int = setting(16, "LoRA rank.", flag=True)
    lora_alpha: int = setting(16, "LoRA alpha.", flag=True)
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None


@dataclass
class PairSettings(TRLSettings):
    """Stages that train on a file of records: pairs, labelled answers, prompts with their answers."""

    max_length: int | None = setting(1024, "Max tokens of prompt+answer.", flag=True)
    per_device_eval_batch_size: int = 8
    eval_steps: int | None = 500
    eval_split: str | float | None = setting(
        None, "Held-out fraction (e.g. 0.1) or a file of the same kind.", flag=True
    )


@dataclass
class RolloutSettings:
    """The sampler of a stage that samples while it trains (ppo, and every OnlineSettings stage): `backend` has
    collect's meaning; with vllm the rollout engine (generation/engine.py) or, for the TRL stages
    on CUDA, TRL's own `use_vllm` samples, and the trained weights reach it after every update."""

    backend: str = setting(
        "auto",
        "Sampler: hf (transformers generate), vllm (a vLLM engine in this process; TRL's use_vllm on CUDA), "
        "auto (vllm where installed and CUDA is present, else hf).",
        flag=True,
    )
    vllm_dtype: str = setting(
        "auto", "--backend vllm: the engine's dtype; auto = the policy's own, so its log-probs are the policy's."
    )
    vllm_kv_cache_gib: float | None = setting(
        None, "--backend vllm on CPU: GiB of KV cache (VLLM_CPU_KVCACHE_SPACE; 1 unless set)."
    )
    vllm_gpu_memory_utilization: float = setting(0.3, "--backend vllm on CUDA: share of GPU memory vLLM may take.")
    vllm_enable_sleep_mode: bool = setting(
        False, "--backend vllm on CUDA: free the engine's memory while the trainer trains (woken to sample)."
    )


@dataclass
class OnlineSettings(TRLSettings, RolloutSettings):
    """Stages whose policy samples answers while it trains, scored by reward sources."""

    temperature: float = setting(1.0, "Sampling temperature.", flag=True)
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_prompt_length: int | None = setting(
        None, "Tokens of the rendered prompt (chat template included); longer ones are cut from the left.", flag=True
    )
    chat_template: bool = setting(True, "Send plain-text prompts as a user message through the chat template.")
    reward_weights: list[float] | None = setting(
        None, "Comma-separated weights, one per --reward (e.g. 1,0.5).", flag=True
    )
    gradient_checkpointing: bool = setting(False, "Off by default: on CPU TRL then generates without the KV cache.")
    logging_steps: int = 1
    vllm_mode: str = setting(
        "colocate",
        "--backend vllm on CUDA (TRL's use_vllm): colocate (in the trainer), server.",
        choices=("colocate", "server"),
    )
    vllm_server_base_url: str | None = setting(None, "vllm_mode=server: the `trl vllm-serve` URL (else host and port).")
    vllm_server_host: str = "0.0.0.0"
    vllm_server_port: int = 8000
    vllm_server_timeout: float = 240.0
    vllm_tensor_parallel_size: int = setting(
        1, "vllm_mode=colocate only; a server takes --tensor-parallel-size itself."
    )


@dataclass
class ServerSettings:
    """`--backend openai`: an OpenAI-compatible server (collect, eval). The API key stays in the
    environment variable `api_key_env` names; only that name is ever written down."""

    base_url: str | None = setting(
        None, "--backend openai: the server's base URL, e.g. http://127.0.0.1:8000/v1 ($OPENAI_BASE_URL).", flag=True
    )
    api_key_env: str = setting("OPENAI_API_KEY", "--backend openai: the environment variable holding the API key.")
    max_concurrency: int = setting(16, "--backend openai: requests in flight at once.", flag=True)
    request_timeout: float = setting(120.0, "--backend openai: seconds one request may take before it is retried.")
    max_retries: int = setting(4, "--backend openai: retries (exponential backoff) before giving up on a request.")
