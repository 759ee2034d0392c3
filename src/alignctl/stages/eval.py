"""Compare a model with a baseline on held-out prompts: mean reward, win / tie / loss, win rate.

    alignctl eval --model runs/dpo --baseline smollm2-135m --prompts held.jsonl --by rule:qa_strict
    alignctl eval -m runs/it/round-2/model -b runs/it/round-1/model -p held.jsonl --by rm:runs/rm
    alignctl eval -m runs/dpo -p held.jsonl --by judge:smollm2-135m -o runs/eval-judge

Both models answer every prompt (greedy by default: the comparison is not a sampling lottery),
then the reward source decides. A pointwise source (`rm:`, `rule:`) scores each answer; prompt i
is a win when the model's score beats the baseline's, a tie when they are equal. A pairwise
source (`judge:`, `human`) compares the two answers directly; the judge asks in both orders and
calls a disagreement a tie (judge.py). The table on stderr gives each side's mean reward (with a
95% interval), mean length in words, win / tie / loss and the win rate (ties count half) with its
Wilson 95% interval (stats.py); the chapter reports Online DPO the same way ("60% 更好，30% 打平").
Next to it, the length-controlled win rate (lcwin.py, AlpacaEval 2's): the win rate the verdicts
imply at equal length, with its length coefficient, so a win that is only "shorter" shows as such.

Writes `DIR/eval.json` (the summary `report` plots for iterate rounds), `DIR/eval.rows.jsonl`
(one line per prompt: both answers, their scores, the outcome) and `DIR/eval.json.alignctl.json`
(the manifest). A rerun with the same models, prompts, source and settings is "up to date".
Generations are cached (generation/cache.py) under `$ALIGNCTL_HOME/cache/generations/`, keyed by the model's
fingerprint, the prompts and the sampling settings, so `iterate` evaluates each round's baseline
(the previous round's model) without generating its answers again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from alignctl import io
from alignctl.comparison import aggregate, render_table, word_count
from alignctl.config import Resolved
from alignctl.console import info
from alignctl.errors import InputError, OutputError
from alignctl.flags import By, JudgeKeyEnv, JudgeUrl, Opts, Prompts, Split
from alignctl.settings import ServerSettings, setting

NAME = "eval"
SUMMARY = "eval.json"
OUTCOMES = ("win", "tie", "loss")


@dataclass
class Settings(ServerSettings):
    """Built-in defaults: greedy decoding, so two evals of the same models agree."""

    temperature: float = setting(0.0, "Sampling temperature; 0 = greedy (default).", flag=True, domain=">= 0")
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (with temperature > 0)."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0 = off)."})
    max_new_tokens: int = setting(256, "Most tokens per answer.", flag=True)
    seed: int = setting(42, "Seed of the sampling streams (temperature > 0).", flag=True)
    batch_size: int = setting(32, "Prompts per generate call.", flag=True)
    backend: str = setting("auto", "auto | hf | vllm | openai (a server at --base-url).", flag=True)
    chat_template: bool = field(
        default=True, metadata={"help": "Send plain-text prompts through the chat template of a chat model."}
    )
    tie_margin: float = field(
        default=0.0, metadata={"help": "Score differences at or below this count as ties (pointwise sources)."}
    )


# ---------------------------------------------------------------------------------------------
# Generation, cached


def generate_answers(
    model_path: str,
    records: list[dict],
    resolved: Resolved,
    *,
    label: str,
    use_cache: bool = True,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> tuple[list[str], float, bool]:
    """(one answer per prompt, seconds spent, whether it came from the cache)."""
    from alignctl import generation
    from alignctl.generation.cache import AnswerCache

    ids = [r["id"] for r in records]
    server = None
    if resolved["backend"] == "openai":  # a served name may change weights under it: never cached
        from alignctl.generation.server import server_options

        server, use_cache = server_options(resolved), False
    cache = AnswerCache(model_path, records, resolved)
    if use_cache:
        cached = cache.read()
        if cached is not None:
            info(f"{label}: {len(cached)} answers from the generation cache")
            return cached, 0.0, True
    params = generation.SamplingParams.from_settings(resolved)
    start = time.perf_counter()
    info(f"{label}: generating {len(records)} answers with {model_path}")
    backend = generation.load_backend(
        resolved["backend"],
        model_path,
        trust_remote_code=trust_remote_code,
        chat_template=None if resolved["chat_template"] else False,
        say=progress,
        server=server,
    )
    texts = [
        t[0]
        for t in generation.generate(backend, [r["prompt"] for r in records], 1, params, ids=ids, progress=progress)
    ]
    del backend
    seconds = time.perf_counter() - start
    if use_cache:
        cache.write(texts)
    return texts, seconds, False


# ---------------------------------------------------------------------------------------------
# The stage


def check(resolved: Resolved) -> None:
    from alignctl.generation import BACKENDS, SamplingParams

    problems = SamplingParams.from_settings(resolved).problems()
    if resolved["backend"] not in BACKENDS:
        problems.append(f"backend must be one of {', '.join(BACKENDS)}, got {resolved['backend']!r}")
    if problems:
        raise InputError("eval: " + "; ".join(problems))
    if resolved["backend"] in ("vllm", "openai"):  # a missing package: one line before any model loads
        from alignctl.generation import pick_backend

        pick_backend(resolved["backend"])


def rows_path(summary_path: Path) -> Path:
    """`DIR/eval.json` -> `DIR/eval.rows.jsonl`; `DIR/eval-base.json` -> `DIR/eval-base.rows.jsonl`."""
    return summary_path.with_name(summary_path.stem + ".rows.jsonl")


def run(
    resolved: Resolved,
    model: str | None,
    baseline: str | None,
    prompts: Path,
    by: str,
    output: Path,
    *,
    overwrite: bool = False,
    force: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
    show: bool = True,
    use_cache: bool = True,
    source_options: dict[str, Any] | None = None,
    split: str | None = None,
) -> Path:
    """Generate, score, write `output` (an eval.json path) and its rows; returns `output`."""
    from alignctl import file_runs, models, readers, runs
    from alignctl.generation.cache import model_fingerprint
    from alignctl.rewards import check_columns, resolve_source, score_records

    check(resolved)
    records = io.load(prompts, "prompts", split=split)
    source = resolve_source(by, trust_remote_code=trust_remote_code, **(source_options or {}))
    check_columns([source], records, prompts)
    output = Path(output)
    if output.suffix != ".json":
        raise InputError(f"{output}: eval writes a .json summary (give -o DIR for DIR/{SUMMARY})")
    if resolved["backend"] == "openai":  # both are names the server serves (e.g. a base model and a LoRA)
        from alignctl.generation.server import base_url_of, server_fingerprint

        if not model or not baseline:
            raise InputError("--backend openai: give --model and --baseline as model names the server serves")
        url = base_url_of(resolved["base_url"])
        model_name, baseline_name = model_path, baseline_path = model, baseline
        model_id, baseline_id = server_fingerprint(url, model), server_fingerprint(url, baseline)
    else:
        model_name, baseline_name = model or models.DEFAULT_MODEL, baseline or models.DEFAULT_MODEL
        model_path, baseline_path = models.resolve_model(model_name), models.resolve_model(baseline_name)
        model_id, baseline_id = model_fingerprint(model_path), model_fingerprint(baseline_path)
    inputs = {
        "prompts": readers.fingerprint(prompts, split),
        "model": model_id,
        "baseline": baseline_id,
        "by": {"spec": by, **source.describe()},
    }
    run_ = file_runs.begin_file(
        NAME,
        output,
        inputs=inputs,
        resolved=resolved,
        overwrite=overwrite,
        force=force,
        parent_model=model_name,
        extra={"rows": rows_path(output).name},
    )
    if run_.up_to_date and rows_path(output).is_file():
        runs.say_up_to_date(run_)
        if show:
            summary = json.loads(output.read_text(encoding="utf-8"))
            render_table(summary, model_name, baseline_name, title=f"eval ({by}, {len(records)} prompts; cached)")
        return output
    if run_.up_to_date:
        info(f"{rows_path(output)}: missing; evaluating again")

    started = time.time()
    model_texts, model_s, model_cached = generate_answers(
        model_path,
        records,
        resolved,
        label="model",
        use_cache=use_cache,
        trust_remote_code=trust_remote_code,
        progress=progress,
    )
    if baseline_path == model_path:
        baseline_texts, base_s, base_cached = model_texts, 0.0, True
    else:
        baseline_texts, base_s, base_cached = generate_answers(
            baseline_path,
            records,
            resolved,
            label="baseline",
            use_cache=use_cache,
            trust_remote_code=trust_remote_code,
            progress=progress,
        )
    model_len = [word_count(t) for t in model_texts]
    base_len = [word_count(t) for t in baseline_texts]
    rows: list[dict[str, Any]] = [
        {"id": r["id"], "prompt": r["prompt"], "model": m, "baseline": b, "model_words": ml, "baseline_words": bl}
        for r, m, b, ml, bl in zip(records, model_texts, baseline_texts, model_len, base_len, strict=True)
    ]
    score_start = time.perf_counter()
    if source.pairwise:
        winners = []
        every = getattr(source, "decide_all", None)  # a judge asks every row together
        pairs = [(row["model"], row["baseline"]) for row in rows]
        if every is not None:
            choices = every([r["prompt"] for r in records], pairs)
        else:
            choices = [source.decide(rec["prompt"], *pair) for rec, pair in zip(records, pairs, strict=True)]
        for row, choice in zip(rows, choices, strict=True):
            winners.append(choice.winner)
            row["verdict"] = choice.detail
        summary, outcomes = aggregate(None, None, model_len, base_len, winners=winners)
    else:
        model_scores = score_records(source, records, model_texts)
        base_scores = score_records(source, records, baseline_texts)
        for row, ms, bs in zip(rows, model_scores, base_scores, strict=True):
            row["model_reward"], row["baseline_reward"] = ms, bs
        summary, outcomes = aggregate(model_scores, base_scores, model_len, base_len, tie_margin=resolved["tie_margin"])
    for row, outcome in zip(rows, outcomes, strict=True):
        row["outcome"] = outcome
    summary["model"]["name"], summary["baseline"]["name"] = model_name, baseline_name
    summary.update(
        by=by,
        source=source.describe(),
        prompts=str(prompts),
        settings={k: resolved[k] for k in ("temperature", "top_p", "top_k", "max_new_tokens", "seed")},
        seconds={
            "generate_model": round(model_s, 2),
            "generate_baseline": round(base_s, 2),
            "score": round(time.perf_counter() - score_start, 2),
            "total": round(time.time() - started, 2),
        },
        cached={"model": model_cached, "baseline": base_cached},
    )
    io.write_jsonl(rows_path(output), rows)
    _finish(run_, summary)
    if show:
        render_table(summary, model_name, baseline_name, title=f"eval ({by}, {len(records)} prompts)")
    return output


def _finish(run_, summary: dict[str, Any]) -> None:
    """Write eval.json and its manifest (which also pins the rows file's hash)."""
    rows = rows_path(run_.out)
    run_.finish_json(
        summary,
        {k: summary[k] for k in ("wins", "ties", "losses", "win_rate", "low", "high")},
        extra={"rows": {"path": str(rows), "sha256": io.sha256_file(rows)}},
    )


def command(
    model: Annotated[
        str, typer.Option("--model", "-m", help="The model to evaluate: a model dir, a hub id or an alias.")
    ],
    prompts: Prompts,
    by: By,
    baseline: Annotated[
        str | None, typer.Option("--baseline", "-b", help="What to compare against (default: smollm2-135m).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output dir for eval.json and eval.rows.jsonl (runs/eval).")
    ] = None,
    judge_url: JudgeUrl = None,
    judge_key_env: JudgeKeyEnv = "OPENAI_API_KEY",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Generate again even if cached.")] = False,
    split: Split = None,
    *,
    resolved: Resolved,
    opts: Opts,
) -> Path:
    """Compare a model with a baseline on held-out prompts (reward, win rate, length)."""
    out_dir = output or Path("runs") / NAME
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a directory (-o takes a directory)")
    judge = {"judge_url": judge_url, "judge_key_env": judge_key_env}
    where = (resolved, model, baseline, prompts, by, out_dir / SUMMARY)
    return run(*where, use_cache=not no_cache, source_options=judge, split=split, **opts.file_switches())
