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
all of them (pairs from the order), `pairwise` asks every comparison. The screens are a Textual
app: redrawn in place, long answers scroll in their panel, the keys that work are in the footer.

Several people: `--serve` opens a page on 127.0.0.1 (another address needs `--host` and prints
an access token) where each annotator enters a name and labels one question at a time;
`--annotations-per-prompt K` hands each prompt to K of them, `--min-agreement` keeps the pairs
they agree on, and every record carries its annotators and votes (docs/labelling.md):

    alignctl label -c c.jsonl --by human --serve --annotations-per-prompt 2 --until-done -o prefs.jsonl

Output: explicit-prompt preference records `{prompt, chosen, rejected, score_chosen,
score_rejected, id, label}`, read by `dpo` and `train-rm` as they are. Candidates sampled
through a chat template (`generator.chat_template`, or message prompts) become conversational
records, so training sees the template the answers were sampled under. Every score or choice is
journalled to `<out>.partial` as it is made (with `--serve`: one journal per annotator in
`<out>.annotations/`, kept after the output is written); a rerun continues from there (people's
choices survive a change of --pairs/--min-margin/--min-agreement), and a finished output is "up to date".
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
from alignctl.labelling.core import HUMAN_MODES, Session, Stopped, questions_for
from alignctl.labelling.votes import agreement_line
from alignctl.prompts import training_form
from alignctl.rewards.pairs import (
    State,
    distinct,
    pairs_from_comparisons,
    pairs_from_ranking,
    pairs_from_scores,
    preference_records,
    summarize,
)
from alignctl.settings import setting
from alignctl.stages.label_ask import ask_judge, check_serving, quit_message, together

NAME = "label"
DEFAULT_PORT = 8765
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
        "--by human: best-worst (one screen per prompt: press the best answer's number, then the worst's; "
        "after the best, e writes a better answer in $EDITOR, which becomes the chosen one), rank (the "
        "numbers best first), pairwise (two answers at a time: a or b is better, t a tie), or auto "
        "(best-worst above 2 answers, else pairwise). Everywhere t means all equal, s skip, u undo, q quit "
        "(a rerun resumes).",
        flag=True,
    )
    annotations_per_prompt: int = setting(1, "--serve: how many different people answer each prompt (K).", flag=True)
    min_agreement: float = setting(
        0.0, "--serve, K >= 2: keep only pairs whose votes agree at least this much (a pair needs 2+ votes).", flag=True
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
    if resolved["annotations_per_prompt"] < 1:
        problems.append(f"annotations_per_prompt must be >= 1, got {resolved['annotations_per_prompt']}")
    if not 0 <= resolved["min_agreement"] <= 1:
        problems.append(f"min_agreement must be between 0 and 1, got {resolved['min_agreement']}")
    if problems:
        raise InputError("label: " + "; ".join(problems))


def print_summary(stats: dict[str, Any], min_margin: float) -> None:
    from rich.markup import escape
    from rich.table import Table

    names = {
        "prompts": "prompts",
        "pairs": "pairs written",
        "ties": "ties (equal scores / no verdict)",
        "dropped": f"dropped (margin < {min_margin:g}, or < 2 distinct answers)"
        if min_margin
        else "dropped (< 2 distinct answers)",
        "skipped": "skipped",
        "disagreed": "dropped (agreement below --min-agreement, or one vote)",
        "mean_chosen_words": "mean chosen length (words)",
        "mean_rejected_words": "mean rejected length (words)",
        "annotated": "prompts with K answers",
        "unanswered": "prompts nobody answered (yet)",
    }
    table = Table(title="label summary", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for k, v in stats.items():
        if k in names:
            table.add_row(names[k], "-" if v is None else escape(str(v)))
    for k, what in (("judged", "all judged pairs"), ("written", "pairs written")):
        if stats.get("agreement", {}).get(k):
            table.add_row(f"agreement, {what}", escape(agreement_line(stats["agreement"][k])))
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
    serve: bool = False,
    host: str | None = None,
    port: int = DEFAULT_PORT,
    until_done: bool = False,
) -> Path:
    """Label and write the preference file; returns its path. Validates before any model loads."""
    from alignctl import file_runs, readers, rewards, runs

    check(resolved)
    check_serving(resolved, by, serve, host, until_done)
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
    rewards.check_columns([source], records, candidates)
    if hasattr(source, "check_terminal") and not serve:
        source.check_terminal()
    forms = {r["id"]: training_form(r) for r in records}
    if isinstance(source, rewards.RuleSource):  # a rule missing its column fails here, before any output
        first = records[0]
        p, cs = forms[first["id"]]
        rewards.score_records(source, [first] * len(cs), cs, [p] * len(cs))
    person = source.kind == "human"
    questions = questions_for(records, forms, resolved["human_mode"], person) if source.pairwise else []
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
    if serve:
        done = together(resolved, records, forms, questions, run_, (host or "127.0.0.1", port, until_done))
        if done is None:
            return run_.out
        rows, stats = done
        print_summary(stats, resolved["min_margin"])
        return run_.finish(_unpaired(rows) if resolved["unpaired"] else rows, stats)
    if run_.up_to_date:
        runs.say_up_to_date(run_)
        return run_.out

    state = State.replay(run_.journal_records)
    try:
        with run_.appender() as journal, _bar(source, records, forms, state, progress) as advance:
            session = Session(questions, forms, state, journal)
            if person:
                from alignctl.labelling.terminal import label_in_terminal

                if label_in_terminal(session) == "quit":
                    raise Stopped(quit_message(session, run_))
            elif source.pairwise:
                ask_judge(source, session, advance)
            else:
                chunk = max(1, resolved["batch_size"] * 4 // max(1, len(records[0]["completions"])))
                score_pointwise(source, records, forms, state, journal, chunk, advance)
    except BaseException:
        run_.drop_empty_journal()
        raise

    mode, margin = resolved["pairs"], resolved["min_margin"]

    def outcome(r: dict, comps: list):
        if r["id"] in state.rankings:
            return pairs_from_ranking(comps, state.rankings[r["id"]], mode, margin)
        if source.pairwise:
            return pairs_from_comparisons(comps, state.decisions.get(r["id"], {}), mode, margin)
        return pairs_from_scores(state.scores[r["id"]], comps, mode, margin)

    base = {"by": by, "kind": described.get("kind"), "source": described, "pairs": mode}
    rows, outcomes = preference_records(records, forms, outcome, base)
    stats = summarize(len(records), outcomes, rows, source.pairwise)
    print_summary(stats, margin)
    return run_.finish(_unpaired(rows) if resolved["unpaired"] else rows, stats)


def _unpaired(rows: list[dict]) -> list[dict]:
    """For kto: each pair's answers as {prompt, completion, label}."""
    return [
        {**u, "id": r["id"], "score": r[side], "label_info": r["label"]}
        for r in rows
        for u, side in zip(io.unpair(r), ("score_chosen", "score_rejected"), strict=True)
    ]


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
    serve: Annotated[
        bool, typer.Option("--serve", help="--by human: a labelling page for several people (docs/labelling.md).")
    ] = False,
    host: Annotated[
        str | None,
        typer.Option("--host", help="--serve: listen here (default 127.0.0.1); another address needs the token."),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="--serve: the port (0: any free one).")] = DEFAULT_PORT,
    until_done: Annotated[
        bool, typer.Option("--until-done", help="--serve: stop once every prompt has its answers (else Ctrl-C).")
    ] = False,
    *,
    resolved: Resolved,
    opts: Opts,
) -> Path:
    """Pick chosen/rejected pairs from candidates with a reward source."""
    judge = {"judge_url": judge_url, "judge_model": judge_model, "judge_key_env": judge_key_env}
    judge["judge_template"] = judge_template
    page = {"serve": serve, "host": host, "port": port, "until_done": until_done}
    return run(resolved, candidates, by, output, split=split, **judge, **page, **opts.file_switches())
