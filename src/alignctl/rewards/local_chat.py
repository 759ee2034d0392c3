"""A local Hugging Face chat model as the judge's `complete(messages) -> str` callable.

The judge (judge.py) asks for one letter, so a short greedy generation is enough; greedy keeps
the verdicts reproducible. The model loads on the first call, through `generation.HFBackend`
(the same chat-template and EOS handling as `collect`).
"""

from __future__ import annotations

from typing import Any


class LocalChatClient:
    """`messages -> text` from a local model dir or alias, greedy, at most `max_new_tokens` tokens."""

    def __init__(self, model: str, *, max_new_tokens: int = 16, trust_remote_code: bool = False) -> None:
        from alignctl import models

        self.model = model
        self.path = models.resolve_model(model)
        self.max_new_tokens = max_new_tokens
        self.trust_remote_code = trust_remote_code
        self._backend = None

    def __repr__(self) -> str:
        return f"LocalChatClient(model={self.model!r})"

    def _load(self):
        from alignctl.generation import HFBackend

        if self._backend is None:
            self._backend = HFBackend(self.path, trust_remote_code=self.trust_remote_code)
        return self._backend

    def __call__(self, messages: list[dict[str, str]]) -> str:
        from alignctl.generation import SamplingParams, generate

        params = SamplingParams(temperature=0, max_new_tokens=self.max_new_tokens, batch_size=1)
        [[reply]] = generate(self._load(), [messages], 1, params)
        return reply

    def describe(self) -> dict[str, Any]:
        from alignctl import runs

        return {
            "kind": "local",
            "model": self.model,
            "max_new_tokens": self.max_new_tokens,
            "temperature": 0,
            **{k: v for k, v in runs.input_fingerprint(self.path).items() if k != "path"},
        }
