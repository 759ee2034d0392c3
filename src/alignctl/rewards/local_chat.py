"""A local Hugging Face chat model as the judge's `complete(messages) -> str` callable.

The judge (judge.py) asks for one letter. With the default template the verdict is read from
the model's next-token scores: every question of a prompt (all its pairs, both orders) goes
through one batched forward pass, and the allowed letter with the higher logit at the first
reply position is the answer (`letters`): no decoding at all, and always a letter, where a
generated reply may say something else and count as unparsed. A custom template may ask the
judge to reason first, so there the judge generates (`complete_many`: greedy, batched; the reply
is parsed as before). Greedy and argmax keep the verdicts reproducible. The model loads on the
first call, through `generation.HFBackend` (the same chat-template and EOS handling as `collect`).
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
        return self.complete_many([messages])[0]

    def complete_many(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        """Greedy replies to several conversations, generated as one batch."""
        from alignctl.generation import SamplingParams, generate

        n = max(1, len(conversations))
        params = SamplingParams(temperature=0, max_new_tokens=self.max_new_tokens, batch_size=n)
        # ids default to a hash of each conversation: the backend caches encodings by id
        return [r[0] for r in generate(self._load(), conversations, 1, params)]

    def letters(self, conversations: list[list[dict[str, str]]], allowed: tuple[str, ...] = ("A", "B")) -> list[str]:
        """The allowed letter the model scores highest as the first token of its reply, for each
        conversation, from one batched forward pass. The questions of one prompt share their start
        (chat header, instructions, the question): that prefix is run once and its KV cache
        shared by every row; the rest is right-padded (a causal model's real tokens never look at
        pads after them) and each row is read at its own last token."""
        from alignctl import prompts

        backend = self._load()
        import torch

        rows = [prompts.render(backend.tokenizer, c, None, name=self.model)[0] for c in conversations]
        shared = 0  # the longest common prefix, leaving every row at least one token of its own
        while shared < min(len(r) for r in rows) - 1 and all(r[shared] == rows[0][shared] for r in rows):
            shared += 1
        dev, n = backend.device, len(rows)
        with torch.inference_mode():
            cache = None
            if shared and backend._takes_logits_to_keep:
                out = backend.model(
                    input_ids=torch.tensor([rows[0][:shared]], device=dev), use_cache=True, logits_to_keep=1
                )
                cache = out.past_key_values
                cache.batch_repeat_interleave(n)
            else:
                shared = 0
            tails = [r[shared:] for r in rows]
            width = max(len(t) for t in tails)
            ids = torch.full((n, width), backend.pad_id, dtype=torch.long)
            for i, tail in enumerate(tails):
                ids[i, : len(tail)] = torch.tensor(tail)
            pos = torch.arange(shared, shared + width).expand(n, -1)
            mask = torch.ones((n, shared + width), dtype=torch.long)
            out = backend.model(
                input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                past_key_values=cache, use_cache=cache is not None,
            )  # fmt: skip
        last = torch.tensor([len(t) - 1 for t in tails])
        logits = out.logits[torch.arange(n), last].float()
        columns = [self._letter_ids(backend.tokenizer, letter) for letter in allowed]
        scores = torch.stack([logits[:, col].max(-1).values for col in columns], dim=-1)
        return [allowed[k] for k in scores.argmax(-1).tolist()]

    @staticmethod
    def _letter_ids(tokenizer, letter: str) -> list[int]:
        """Token ids a reply can start this letter with ("A", " A"): the first token of each spelling."""
        found = {tokenizer.encode(form, add_special_tokens=False)[0] for form in (letter, " " + letter)}
        return sorted(found)

    def describe(self) -> dict[str, Any]:
        from alignctl import runs

        return {
            "kind": "local",
            "model": self.model,
            "max_new_tokens": self.max_new_tokens,
            "temperature": 0,
            **{k: v for k, v in runs.input_fingerprint(self.path).items() if k != "path"},
        }
