"""Turn candidates into preference pairs with a reward source: a reward model, a rule, a judge or you.

    alignctl label --candidates candidates.jsonl --by rm:runs/rm -o prefs.jsonl
    alignctl label --candidates c.jsonl --by rule:qa --pairs all --min-margin 0.2 -o prefs.jsonl
    alignctl label --candidates c.jsonl --by judge:gpt-4o-mini --judge-url http://127.0.0.1:8000/v1 -o p.jsonl
    alignctl label --candidates c.jsonl --by human -o prefs.jsonl

The chapter's "DPO 偏好训练": among the answers sampled for a question, a person (or a large
model, RLAIF; or a reward model, as in Online DPO and iterative training) picks a good one and a
bad one. Pointwise sources (`rm:`, `rule:`) score every candidate; `--pairs best-worst` (default)
keeps the top- and bottom-scored answers of each prompt, `--pairs all` every pair with different
scores; `--min-margin` drops pairs whose scores are closer than that. A judge compares every two
distinct candidates of a prompt (so two samples per prompt mean one comparison); a candidate's
score is its win rate (ties count half), best-worst keeps the pair only if their own comparison
agrees, and `all` keeps every decided comparison. The judge asks both orders; disagreement is a
tie. A person (`--by human`) sees one screen per prompt when it has more than two answers
(`--human-mode auto`): press the best's number, then the worst's, or first `e` to write a better
answer in $EDITOR (it becomes the chosen side, `label.human_written`); `--human-mode rank` orders
all of them (pairs from the order), `pairwise` asks every comparison.

Output: explicit-prompt preference records `{prompt, chosen, rejected, score_chosen,
score_rejected, id, label}`, read by `dpo` and `train-rm` as they are. Candidates sampled
through a chat template (`generator.chat_template`, or message prompts) become conversational
records, so training sees the template the answers were sampled under. Every score or choice is
journalled to `<out>.partial` as it is made; a rerun continues from there (a person's choices
survive a change of --pairs/--min-margin), and a finished output is "up to date".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from alignctl import io
from alignctl.config import Resolved
from alignctl.console import console, info, warn
from alignctl.errors import InputError
from alignctl.flags import By, JudgeKeyEnv, JudgeModel, JudgeTemplate, JudgeUrl, Opts, Split
from alignctl.prompts import training_form
from alignctl.rewards.pairs import (
    State,
    distinct,
    pairs_from_comparisons,
    pairs_from_ranking,
    pairs_from_scores,
    summarize,
)
from alignctl.settings import setting
from alignctl.stages.label_ask import HUMAN_MODES, Stopped, ask  # noqa: F401 (Stopped: label's error)

NAME = "label"
PAIR_MODES = ("best-worst", "all")


@dataclass
class Settings:
    """Built-in defaults (no chapter preset: selection is the user's call)."""

    pairs: str = setting("best-worst", "best-worst (one pair per prompt) or all.", flag=True)
    min_margin: float = setting(0.0, "Drop pairs whose scores differ by less than this.", flag=True)
    batch_size: int = setting(16, "Reward-model scoring batch (sequences).", flag=True)
    max_length: int | None = field(default=1024, metadata={"help": "Reward-model max tokens (kept from the end)."})
    judge_max_tokens: int = field(default=16, metadata={"help": "Most tokens of a judge's reply."})
    unpaired: bool = setting(
        False, "Write KTO's unpaired records (chosen -> label true, rejected -> false) instead of pairs.", flag=True
    )
    human_mode: str = setting(
        "auto",
        "--by human: best-worst (one screen per prompt), rank, pairwise, or auto (best-worst above 2 answers).",
        flag=True,
    )


# ---------------------------------------------------------------------------------------------
# Scores and choices, journalled as they are made


def score_pointwise(source, records: list[dict], forms: dict, state: State, journal, chunk: int, progress) -> None:
    from alignctl.rewards import score_records

    pending = [r for r in records if r["id"] not in state.scores]
    for start in range(0, len(pending), chunk):
        part = pending[start : start + chunk]
        rows, prompts, comps, repeat = [], [], [], []
        for r in part:
            p, cs = forms[r["id"]]
            rows += [r] * len(cs)
            prompts += [p] * len(cs)
            comps += cs
            repeat.append(len(cs))
        scores = score_records(source, rows, comps, prompts)
        at = 0
        for r, n in zip(part, repeat, strict=True):
            state.scores[r["id"]] = scores[at : at + n]
            journal.add({"t": "scores", "id": r["id"], "scores": state.scores[r["id"]]})
            at += n
        progress(len(part))


# ---------------------------------------------------------------------------------------------
# The stage


def check(resolved: Resolved) -> None:
    problems = []
    if resolved["pairs"] not in PAIR_MODES:
        problems.append(f"pairs must be one of {', '.join(PAIR_MODES)}, got {resolved['pairs']!r}")
    if resolved["min_margin"] < 0:
        problems.append(f"min_margin must be >= 0, got {resolved['min_margin']}")
    if resolved["batch_size"] < 1:
        problems.append(f"batch_size must be >= 1, got {resolved['batch_size']}")
    if resolved["human_mode"] not in HUMAN_MODES:
        problems.append(f"human_mode must be one of {', '.join(HUMAN_MODES)}, got {resolved['human_mode']!r}")
    if resolved["judge_max_tokens"] < 1:
        problems.append(f"judge_max_tokens must be >= 1, got {resolved['judge_max_tokens']}")
    if problems:
        raise InputError("label: " + "; ".join(problems))


def print_summary(stats: dict[str, Any], min_margin: float) -> None:
    from rich.table import Table

    names = {
        "prompts": "prompts",
        "pairs": "pairs written",
        "ties": "ties (equal scores / no verdict)",
        "dropped": f"dropped (margin < {min_margin:g}, or < 2 distinct answers)"
        if min_margin
        else "dropped (< 2 distinct answers)",
        "skipped": "skipped",
        "mean_chosen_words": "mean chosen length (words)",
        "mean_rejected_words": "mean rejected length (words)",
    }
    table = Table(title="label summary", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for k, v in stats.items():
        table.add_row(names[k], "-" if v is None else str(v))
    console.print(table)
    chosen, rejected = stats["mean_chosen_words"], stats["mean_rejected_words"]
    if chosen and rejected and chosen > 1.5 * rejected:
        warn(
            f"chosen answers average {chosen:g} words, rejected {rejected:g}: the source may reward length "
            "(the chapter's reward-hacking warning)"
        )
    if not stats["pairs"]:
        warn("no pairs written: every prompt was a tie or dropped")


def run(
    resolved: Resolved,
    candidates: Path,
    by: str,
    output: Path,
    *,
    judge_url: str | None = None,
    judge_model: str | None = None,
    judge_key_env: str = "OPENAI_API_KEY",
    judge_template: Path | None = None,
    overwrite: bool = False,
    force: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
    split: str | None = None,
) -> Path:
    """Label and write the preference file; returns its path. Validates before any model loads."""
    from alignctl import file_runs, readers, rewards, runs

    check(resolved)
    records = io.load(candidates, "candidates", split=split)
    source = rewards.resolve_source(
        by,
        judge_url=judge_url,
        judge_model=judge_model,
        judge_key_env=judge_key_env,
        judge_template=judge_template,
        judge_max_tokens=resolved["judge_max_tokens"],
        batch_size=resolved["batch_size"],
        max_length=resolved["max_length"],
        trust_remote_code=trust_remote_code,
    )
    if hasattr(source, "check_terminal"):
        source.check_terminal()
    forms = {r["id"]: training_form(r) for r in records}
    if isinstance(source, rewards.RuleSource):  # a rule missing its column fails here, before any output
        first = records[0]
        p, cs = forms[first["id"]]
        rewards.score_records(source, [first] * len(cs), cs, [p] * len(cs))
    described = source.describe()
    inputs = {"candidates": readers.fingerprint(candidates, split)}
    run_ = file_runs.begin_file(
        NAME,
        output,
        inputs=inputs,
        resolved=resolved,
        overwrite=overwrite,
        force=force,
        extra={"by": by, "source": described},
        journal_key={"by": by, "source": described, "scoring": _scoring_settings(resolved, source)},
    )
    if run_.up_to_date:
        runs.say_up_to_date(run_)
        return run_.out

    state = State.replay(run_.journal_records)
    try:
        with run_.appender() as journal, _bar(source, records, forms, state, progress) as advance:
            if source.pairwise:
                ask(source, records, forms, state, journal, advance, resolved["human_mode"])
            else:
                chunk = max(1, resolved["batch_size"] * 4 // max(1, len(records[0]["completions"])))
                score_pointwise(source, records, forms, state, journal, chunk, advance)
    except BaseException:
        run_.drop_empty_journal()
        raise

    mode, margin = resolved["pairs"], resolved["min_margin"]
    rows, outcomes = [], []
    for r in records:
        prompt, comps = forms[r["id"]]
        if r["id"] in state.rankings:
            outcome = pairs_from_ranking(comps, state.rankings[r["id"]], mode, margin)
        elif source.pairwise:
            outcome = pairs_from_comparisons(comps, state.decisions.get(r["id"], {}), mode, margin)
        else:
            outcome = pairs_from_scores(state.scores[r["id"]], comps, mode, margin)
        outcomes.append(outcome)
        for pair in outcome.pairs:
            label = {
                "by": by,
                "kind": described.get("kind"),
                "source": described,
                "pairs": mode,
                "chosen_index": pair.chosen,
                "rejected_index": pair.rejected,
                "margin": round(pair.score_chosen - pair.score_rejected, 6),
            }
            if pair.verdict is not None:
                label["verdict"] = pair.verdict
            if pair.text is not None:  # written by the person, better than answer `chosen_index`
                label["human_written"] = True
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": comps[pair.chosen] if pair.text is None else _as_answer(pair.text, comps[pair.chosen]),
                    "rejected": comps[pair.rejected],
                    "score_chosen": pair.score_chosen,
                    "score_rejected": pair.score_rejected,
                    "id": r["id"],
                    "label": label,
                }
            )
    stats = summarize(len(records), outcomes, rows, source.pairwise)
    print_summary(stats, margin)
    if resolved["unpaired"]:  # for kto: each pair's answers as {prompt, completion, label}
        rows = [
            {**u, "id": r["id"], "score": r[side], "label_info": r["label"]}
            for r in rows
            for u, side in zip(io.unpair(r), ("score_chosen", "score_rejected"), strict=True)
        ]
    return run_.finish(rows, stats)


def _as_answer(text: str, like):
    """A written answer in the form of the candidates (a string, or an assistant message list)."""
    return [{"role": "assistant", "content": text}] if isinstance(like, list) else text


def _scoring_settings(resolved: Resolved, source) -> dict:
    """The settings that change a source's scores or verdicts (not which pairs are kept)."""
    if source.pairwise:
        return {"judge_max_tokens": resolved["judge_max_tokens"]} if source.kind == "judge" else {}
    return {"max_length": resolved["max_length"]} if source.kind == "reward_model" else {}


class _bar:
    """Progress over prompts (pointwise) or comparisons (judge); none for a person at the terminal."""

    def __init__(self, source, records, forms, state: State, enabled: bool) -> None:
        if source.pairwise:
            counts = [len(list(itertools.combinations(distinct(forms[r["id"]][1]), 2))) for r in records]
            self.total = sum(counts)
            self.done = sum(len(d) for d in state.decisions.values())
            self.what = "comparisons"
        else:
            self.total = len(records)
            self.done = sum(1 for r in records if r["id"] in state.scores)
            self.what = "prompts"
        self.enabled = enabled and source.kind != "human" and self.done < self.total
        if self.done and self.done < self.total:
            info(f"resuming: {self.done} of {self.total} {self.what} already labelled")

    def __enter__(self):
        if not self.enabled:
            return lambda k: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn(f"labelling {self.what}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.progress.__enter__()
        task = self.progress.add_task("label", total=self.total, completed=self.done)
        return lambda k: self.progress.advance(task, k)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)


def command(
    candidates: Annotated[
        Path,
        typer.Option(
            "--candidates", "-c", help="Candidates (from collect): JSONL, Parquet, JSON array, dataset dir, hub id."
        ),
    ],
    by: By,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Preferences JSONL to write (never overwritten without --overwrite).")
    ] = Path("prefs.jsonl"),
    judge_url: JudgeUrl = None,
    judge_model: JudgeModel = None,
    judge_key_env: JudgeKeyEnv = "OPENAI_API_KEY",
    judge_template: JudgeTemplate = None,
    split: Split = None,
    *,
    resolved: Resolved,
    opts: Opts,
) -> Path:
    """Pick chosen/rejected pairs from candidates with a reward source."""
    judge = {"judge_url": judge_url, "judge_model": judge_model, "judge_key_env": judge_key_env}
    judge["judge_template"] = judge_template
    return run(resolved, candidates, by, output, split=split, **judge, **opts.file_switches())
