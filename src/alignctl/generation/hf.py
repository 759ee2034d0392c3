"""The `hf` backend: transformers models, batched, on CPU or GPU (the package docstring has the
guarantees).

Prompts are left-padded into batches sorted by length (similar lengths waste less compute on
padding), KV cache on, each row stopping at EOS. The decode loop is ours: a row that reaches EOS
leaves the batch and the cache (`DynamicCache.batch_select_indices`), so short answers do not pay
for the longest one (with sampled QA answers most rows stop long before `max_new_tokens`; HF
`generate` keeps computing them to the end). A model whose cache cannot drop rows falls back to
`generate` with one printed line. Sampling uses one `torch.Generator` per (prompt id, sample
index), so a completion's random stream depends on the seed and the prompt id only, never on
which other prompts share its batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from alignctl import prompts
from alignctl.console import note
from alignctl.generation.sampling import Generation, Item, RowSampler, SamplingParams, row_seed


def _eos_ids(tokenizer, model) -> set[int]:
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return ids


class HFBackend:
    """transformers `generate` on left-padded, length-sorted batches (see the module docstring)."""

    name = "hf"

    def __init__(
        self,
        model_path: str,
        *,
        trust_remote_code: bool = False,
        chat_template: bool | None = None,
        model: Any = None,
        tokenizer: Any = None,
        prune: bool = True,
    ) -> None:
        from alignctl import models

        models.setup_torch()
        self.model_path = model_path
        self.tokenizer = tokenizer or models.load_tokenizer(model_path, trust_remote_code=trust_remote_code)
        self.model = model or models.load_causal_lm(model_path, trust_remote_code=trust_remote_code)
        self.device = models.device()
        if model is None:
            self.model.to(self.device)
        else:
            self.device = str(next(self.model.parameters()).device)
        self.model.eval()
        self.prompts = prompts.Encoder(self.tokenizer, chat_template, model_path)
        self.eos_ids = _eos_ids(self.tokenizer, self.model)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = min(self.eos_ids) if self.eos_ids else 0
        self.prune = prune
        self._takes_logits_to_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def encode(self, item: Item) -> tuple[list[int], bool]:
        """(the prompt's token ids, whether they went through the chat template): `prompts.render`."""
        return self.prompts.encode(item.id, item.prompt)

    def uses_template(self, prompt: str | list[dict]) -> bool:
        return self.prompts.uses_template(prompt)

    def plan(self, items: Sequence[Item], n: int, params: SamplingParams) -> list[list[int]]:
        """Batches of item indices: sorted by prompt length, `batch_size // n` prompts each."""
        per_batch = max(1, params.batch_size // n)
        order = sorted(range(len(items)), key=lambda i: (len(self.encode(items[i])[0]), i))
        return [order[i : i + per_batch] for i in range(0, len(order), per_batch)]

    def generate_batch(
        self, items: Sequence[Item], n: int, params: SamplingParams, on_step: Callable | None = None
    ) -> list[Generation]:
        import torch

        rows = [self.encode(it)[0] for it in items for _ in range(n)]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, ids in enumerate(rows):  # left padding: every row's last prompt token is aligned
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            mask[r, width - len(ids) :] = 1
        seeds = [row_seed(params.seed, it.id, k) for it in items for k in range(n)]
        new = None
        if self.prune:
            try:
                new = self._decode(input_ids, mask, RowSampler(seeds, params, self.eos_ids, None), params, on_step)
            except (TypeError, AttributeError, NotImplementedError) as exc:
                self.prune = False
                note(f"{self.model_path}: finished rows cannot be dropped from this model's cache "
                     f"({type(exc).__name__}: {exc}); generating with transformers generate()")  # fmt: skip
        if new is None:
            new = self._generate(input_ids, mask, RowSampler(seeds, params, self.eos_ids, on_step), params)
        results = []
        for i, it in enumerate(items):
            texts, tokens, finished = [], [], []
            for k in range(n):
                ids = new[i * n + k]
                stop = next((j for j, t in enumerate(ids) if t in self.eos_ids), None)
                kept = ids if stop is None else ids[:stop]
                text = self.tokenizer.decode(kept, skip_special_tokens=True)
                texts.append(text.strip() if self.encode(it)[1] else text)
                tokens.append(len(kept) + (stop is not None))
                finished.append(stop is not None)
            results.append(Generation(it.id, texts, tokens, finished))
        return results

    def _decode(self, input_ids, mask, sampler: RowSampler, params: SamplingParams, on_step: Callable | None):
        """Prefill, then one forward pass per token with the KV cache; rows that reach EOS leave the
        batch (and the cache), so a batch costs what its live rows cost, not its longest row x all."""
        import torch
        from transformers import DynamicCache

        ids, mask = input_ids.to(self.device), mask.to(self.device)
        rows = list(range(ids.shape[0]))
        out: list[list[int]] = [[] for _ in rows]
        eos = torch.tensor(sorted(self.eos_ids) or [-1], device=self.device)
        cache = DynamicCache(config=self.model.config)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        keep_last = {"logits_to_keep": 1} if self._takes_logits_to_keep else {}
        with torch.inference_mode():
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True, **keep_last
            ).logits[:, -1, :]
            for step in range(params.max_new_tokens):
                if on_step is not None:
                    on_step(len(rows))
                nxt = sampler.pick(logits, rows)
                for r, t in zip(rows, nxt.tolist(), strict=True):
                    out[r].append(t)
                live = ~torch.isin(nxt, eos)
                if step == params.max_new_tokens - 1 or not bool(live.any()):
                    break
                if not bool(live.all()):
                    keep = live.nonzero().squeeze(1)
                    cache.batch_select_indices(keep)
                    mask, pos, nxt = mask[keep], pos[keep], nxt[keep]
                    rows = [rows[k] for k in keep.tolist()]
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                pos = pos[:, -1:] + 1
                logits = self.model(
                    input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True
                ).logits[:, -1, :]
        return out

    def _generate(self, input_ids, mask, sampler: RowSampler, params: SamplingParams) -> list[list[int]]:
        """The fallback: transformers `generate`, sampling through `sampler` as a logits processor."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=False,  # RowSampler samples; generate takes the argmax of its one-hot rows
            num_beams=1,
            use_cache=True,
            eos_token_id=sorted(self.eos_ids) or None,
            pad_token_id=self.pad_id,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_new_tokens=0,
        )
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                generation_config=config,
                logits_processor=LogitsProcessorList([sampler]),
            )
        return out[:, input_ids.shape[1] :].tolist()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device}
