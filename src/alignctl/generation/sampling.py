"""What a backend is asked and what it answers: sampling parameters, prompts in, completions out,
and the per-row seeded sampling that makes a completion independent of its batch."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from alignctl.errors import InputError

# the settings a stage (collect, eval) holds under these names
SETTINGS = ("temperature", "top_p", "top_k", "max_new_tokens", "seed", "batch_size")


@dataclass
class SamplingParams:
    """How to sample. temperature 0 means greedy (top_p/top_k then do nothing)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 256
    seed: int = 42
    batch_size: int = 32  # sequences (prompts x samples) per generate call

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> SamplingParams:
        """The parameters a stage's resolved settings name (`SETTINGS`); not checked yet."""
        return cls(**{k: values[k] for k in SETTINGS})

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def problems(self) -> list[str]:
        out = []
        if self.temperature < 0:
            out.append(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            out.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            out.append(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.max_new_tokens < 1:
            out.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            out.append(f"batch_size must be >= 1, got {self.batch_size}")
        return out

    def check(self) -> SamplingParams:
        if errs := self.problems():
            raise InputError("; ".join(errs))
        return self


@dataclass
class Item:
    """One prompt to complete, keyed by its id (the journal key of resumable stages)."""

    id: str
    prompt: str | list[dict]


@dataclass
class Generation:
    """The completions of one prompt: text, generated token count, and whether EOS ended it."""

    id: str
    texts: list[str]
    tokens: list[int]
    finished: list[bool]


def row_seed(seed: int, item_id: str, sample: int) -> int:
    """The seed of one completion's random stream: a hash of (seed, prompt id, sample index)."""
    digest = hashlib.sha256(f"{seed}\x00{item_id}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def filter_logits(logits, temperature: float, top_k: int = 0, top_p: float = 1.0):
    """Temperature, then top-k, then top-p (nucleus) filtering; removed entries become -inf.

    top-p keeps the smallest set of most likely tokens whose probability reaches `top_p` (the
    token that crosses the threshold is kept, so at least one token always survives).
    """
    import torch

    logits = logits / temperature
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the tokens ranked above each one
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class RowSampler:
    """Samples each row from its own generator (seeded by `row_seed`), so a row's random stream
    does not depend on the other rows of its batch.

    `pick(logits, rows)` serves alignctl's decode loop; called as a `generate` logits processor it
    returns one-hot scores (generate then runs greedy on them) and counts live rows for progress.
    """

    def __init__(self, seeds: list[int], params: SamplingParams, eos_ids: set[int], on_step: Callable | None) -> None:
        self.seeds = seeds
        self.params = params
        self.eos_ids = sorted(eos_ids)
        self.on_step = on_step
        self.generators: list = []
        self.alive = None

    def pick(self, logits, rows: list[int]):
        """The next token of each of `rows` (original row indices), from `logits` (one line per row)."""
        import torch

        if self.params.greedy:
            return logits.argmax(dim=-1)
        if not self.generators:
            self.generators = [torch.Generator(device=logits.device).manual_seed(s) for s in self.seeds]
        filtered = filter_logits(logits.float(), self.params.temperature, self.params.top_k, self.params.top_p)
        probs = torch.softmax(filtered, dim=-1)
        return torch.cat([torch.multinomial(probs[k], 1, generator=self.generators[r]) for k, r in enumerate(rows)])

    def __call__(self, input_ids, scores):
        import torch

        if self.alive is None:
            self.alive = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        elif self.eos_ids:
            self.alive &= ~torch.isin(input_ids[:, -1], torch.tensor(self.eos_ids, device=input_ids.device))
        if self.on_step is not None:
            self.on_step(int(self.alive.sum()))
        picks = self.pick(scores, list(range(scores.shape[0]))).view(-1, 1)
        return torch.full_like(scores, float("-inf")).scatter_(1, picks, 0.0)
