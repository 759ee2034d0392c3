"""A reward model dir as a reward source: one scalar per (prompt, completion), scored in batches.

A reward model is a sequence classifier with `num_labels=1` (the chapter's "训练奖励模型"; the
output of `alignctl train-rm`). It scores text the way TRL's RewardTrainer trained it: message
data through the tokenizer's chat template, plain text as prompt + completion; the score is the
logit at the last non-padding token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alignctl.errors import InputError


def conversation(prompt: Any, completion: Any) -> list[dict] | None:
    """The full chat for conversational data (either side a message list), else None."""
    if not isinstance(prompt, list) and not isinstance(completion, list):
        return None
    head = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    tail = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
    return list(head) + list(tail)


class RewardModelSource:
    """Pointwise source: `score(prompts, completions, columns) -> list[float]`. Loads on first use."""

    pairwise = False
    kind = "reward_model"

    def __init__(
        self, path: str, *, batch_size: int = 16, max_length: int | None = 1024, trust_remote_code: bool = False
    ) -> None:
        from alignctl.models import check_reward_model

        check_reward_model(path, f"rm:{path}")
        if batch_size < 1:
            raise InputError(f"reward model batch_size must be >= 1, got {batch_size}")
        self.path = path
        self.batch_size = batch_size
        self.max_length = max_length
        self.trust_remote_code = trust_remote_code
        self.model = None
        self.tokenizer = None

    def _load(self) -> None:
        from alignctl import models

        models.setup_torch()
        resolved = models.resolve_model(self.path)
        self.tokenizer = models.load_tokenizer(resolved, padding_side="right", trust_remote_code=self.trust_remote_code)
        self.tokenizer.truncation_side = "left"  # the score is read at the end: keep the completion
        self.model = models.load_reward_model(resolved, trust_remote_code=self.trust_remote_code)
        if self.model.config.pad_token_id is None:  # the classifier finds the last token by pad id
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = models.device()
        self.model.to(self.device).eval()

    def text(self, prompt: Any, completion: Any) -> tuple[str, bool]:
        """(text to score, whether the chat template wrote it)."""
        chat = conversation(prompt, completion)
        if chat is None:
            return prompt + completion, False
        if not getattr(self.tokenizer, "chat_template", None):
            raise InputError(f"rm:{self.path}: the data is conversational but the reward model has no chat template")
        return self.tokenizer.apply_chat_template(chat, tokenize=False), True

    def score(self, prompts: Sequence[Any], completions: Sequence[Any], columns: dict | None = None) -> list[float]:
        import torch

        if len(prompts) != len(completions):
            raise InputError(f"rm:{self.path}: {len(prompts)} prompts for {len(completions)} completions")
        if self.model is None:
            self._load()
        texts = [self.text(p, c) for p, c in zip(prompts, completions, strict=True)]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i][0]))  # similar lengths, less padding
        scores = [0.0] * len(texts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for templated in (False, True):  # templated text carries its own special tokens
                part = [i for i in idx if texts[i][1] == templated]
                if not part:
                    continue
                enc = self.tokenizer(
                    [texts[i][0] for i in part],
                    padding=True,
                    truncation=self.max_length is not None,
                    max_length=self.max_length,
                    add_special_tokens=not templated,
                    return_tensors="pt",
                ).to(self.device)
                with torch.inference_mode():
                    logits = self.model(**enc).logits[:, 0].float().tolist()
                for i, value in zip(part, logits, strict=True):
                    scores[i] = value
        return scores

    def describe(self) -> dict[str, Any]:
        from alignctl import runs

        return {"kind": self.kind, "model": self.path, **runs.input_fingerprint(self.path)}
