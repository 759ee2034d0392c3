"""Check prompts / candidates / preference files and show the stats to know before training.

    alignctl validate prefs.jsonl
    alignctl validate prompts.jsonl cands.jsonl prefs.jsonl --model smollm2-135m
    alignctl validate prefs.jsonl --json > prefs.stats.json

Every problem in every file is listed as `file:line: what is wrong` (`file: row N: ...` for a
table) on stderr (not only the first, which is all a stage shows before it stops). Then, per file,
on stdout: record count, shape (standard/conversational, implicit/explicit prompt), duplicates,
identical pairs, length percentiles (tokens of `--model`; else words, a CJK character counting as
one), how many records were whole conversations whose prompt turns were split off and, for
preferences, how much longer the chosen answers are than the rejected ones and, for a file labelled
by several people (`label --serve`), their agreement: the same figures `label` printed for the
pairs it wrote (Krippendorff's alpha over the records' `label.votes`, mean per-pair agreement). Exit code 2 when any
file has a problem, so `alignctl validate data/*.jsonl && make train` stops early.

The length ratio is there because of the chapter ("PPO 训练细节及超参数", the Reward Hacking
paragraph): a policy finds that longer text scores higher and learns verbosity instead of quality
(Singhal et al. 2023, "A Long Way to Go", arXiv 2310.03716). Pairs whose chosen answer is nearly
always the longer one teach exactly that to a reward model or to DPO.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from alignctl import io
from alignctl.console import console
from alignctl.errors import InputError
from alignctl.labelling.votes import agreement_line, from_records

# "systematically longer": chosen is the longer answer in at least this share of pairs, and the
# mean lengths differ by at least this factor; below MIN_PAIRS the share says little.
LENGTH_BIAS_SHARE = 0.7
LENGTH_BIAS_RATIO = 1.2
MIN_PAIRS = 5
PERCENTILES = (50, 90, 99)

Lengths = Callable[[list[Any]], list[int]]


def percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile of an ascending list (p50 of [1, 2, 3, 4] is 2)."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    out: dict[str, float] = {f"p{p}": percentile(ordered, p) for p in PERCENTILES}
    out["max"] = ordered[-1]
    out["mean"] = round(sum(ordered) / len(ordered), 2)
    return out


def _plain(value: str | list[dict]) -> str:
    return value if isinstance(value, str) else "\n".join(str(m.get("content", "")) for m in value)


def word_lengths(values: list[Any]) -> list[int]:
    """Words, a CJK character counting as one: Chinese text has no spaces to split on."""
    return [io.text_length(v) for v in values]


def token_lengths_for(model: str, trust_remote_code: bool = False) -> Lengths:
    """A length function counting tokens of `model`'s tokenizer (chat template for message lists)."""
    from alignctl import models

    tokenizer = models.load_tokenizer(models.resolve_model(model), trust_remote_code=trust_remote_code)

    def render(value: Any) -> str:
        if isinstance(value, str):
            return value
        if getattr(tokenizer, "chat_template", None):
            try:
                return tokenizer.apply_chat_template(value, tokenize=False)
            except Exception:  # a template that rejects a lone assistant turn: count the plain text
                pass
        return _plain(value)

    def lengths(values: list[Any]) -> list[int]:
        if not values:
            return []
        encoded = tokenizer([render(v) for v in values], add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    return lengths


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _prompt_shape(prompt: Any) -> str:
    return "conversational" if isinstance(prompt, list) else "standard"


def file_stats(result: io.ReadResult, lengths: Lengths) -> dict[str, Any]:
    """Stats of the valid records of one file (problems are counted, not measured)."""
    recs = result.records
    stats: dict[str, Any] = {"records": len(recs), "normalised": result.normalised}
    if result.kind == "preferences":
        stats["shapes"] = dict(Counter(io.preference_shape(r) for r in recs))
        seen = Counter(_canonical([r.get("prompt"), r["chosen"], r["rejected"]]) for r in recs)
        stats["duplicates"] = sum(n - 1 for n in seen.values())
        # chosen == rejected is a problem the reader already reports, so those records are not here
        stats["identical_pairs"] = sum(1 for p in result.problems if "is identical to" in p.message)
        explicit = [io.to_explicit(r) for r in recs]
        prompt_len = lengths([r["prompt"] for r in explicit if r["prompt"]])
        chosen_len = lengths([r["chosen"] for r in explicit])
        rejected_len = lengths([r["rejected"] for r in explicit])
        stats["lengths"] = {
            "prompt": summarize(prompt_len),
            "chosen": summarize(chosen_len),
            "rejected": summarize(rejected_len),
        }
        stats["length_ratio"] = length_ratio(chosen_len, rejected_len)
        agreed = from_records(recs)
        if agreed is not None:
            stats["agreement"] = agreed
    else:
        if result.kind == "completions":  # as sft reads them: a conversation's answer is its last turn
            from alignctl.training.data import prompt_completion

            recs = [prompt_completion(r) for r in recs]
        stats["shapes"] = dict(Counter(_prompt_shape(r["prompt"]) for r in recs))
        # unpaired: one prompt has several answers, so a duplicate is the same prompt and answer
        seen = Counter(_canonical([r["prompt"], r.get("completion")]) for r in recs)
        stats["duplicates"] = sum(n - 1 for n in seen.values())  # same prompt text under another id
        stats["lengths"] = {"prompt": summarize(lengths([r["prompt"] for r in recs]))}
        if result.kind in ("unpaired", "completions"):
            stats["lengths"]["completion"] = summarize(lengths([r["completion"] for r in recs]))
        if result.kind == "unpaired":
            stats["desirable"] = sum(1 for r in recs if r["label"])
        if result.kind == "candidates":
            counts = [len(r["completions"]) for r in recs]
            stats["completions_per_record"] = {"min": min(counts, default=0), "max": max(counts, default=0)}
            # a record whose completions are all the same cannot give a (chosen, rejected) pair
            stats["identical_pairs"] = sum(1 for r in recs if len({_canonical(c) for c in r["completions"]}) == 1)
            comps = [c for r in recs for c in r["completions"]]
            stats["lengths"]["completion"] = summarize(lengths(comps))
            stats["scored"] = sum(1 for r in recs if r.get("scores") is not None)
    return stats


def length_ratio(chosen: list[int], rejected: list[int]) -> dict[str, float]:
    """Mean chosen length over mean rejected length, and how often each side is the longer one."""
    n = len(chosen)
    if not n:
        return {}
    mean_c, mean_r = sum(chosen) / n, sum(rejected) / n
    return {
        "mean_ratio": round(mean_c / mean_r, 3) if mean_r else math.inf,
        "chosen_longer": round(sum(c > r for c, r in zip(chosen, rejected, strict=True)) / n, 3),
        "chosen_shorter": round(sum(c < r for c, r in zip(chosen, rejected, strict=True)) / n, 3),
        "pairs": n,
    }


def length_bias_warning(path: Path, ratio: dict[str, float]) -> str | None:
    """The chapter's length-bias warning when chosen answers are systematically the longer ones."""
    if not ratio or ratio["pairs"] < MIN_PAIRS:
        return None
    if ratio["chosen_longer"] >= LENGTH_BIAS_SHARE and ratio["mean_ratio"] >= LENGTH_BIAS_RATIO:
        return (
            f"{path}: chosen is longer than rejected in {ratio['chosen_longer']:.0%} of pairs "
            f"({ratio['mean_ratio']:.2f}x on average): training on these pairs rewards length itself, "
            "the reward hacking the chapter warns of (PPO 训练细节及超参数, Reward Hacking; "
            "arXiv 2310.03716). Balance lengths or check that longer answers are really better."
        )
    if ratio["chosen_longer"] <= 1 - LENGTH_BIAS_SHARE and ratio["mean_ratio"] <= 1 / LENGTH_BIAS_RATIO:
        return (
            f"{path}: chosen is shorter than rejected in {ratio['chosen_shorter']:.0%} of pairs "
            f"({ratio['mean_ratio']:.2f}x on average): much of what these pairs teach is brevity."
        )
    return None


def render(report: dict[str, Any], unit: str) -> str:
    """The human-readable report of one file (stdout)."""
    s = report["stats"]
    n = len(report["problems"])
    kind = report["kind"] or "unreadable"
    head = f"{report['path']}: {kind}, {s['records']} records, {n} problem{'' if n == 1 else 's'}"
    if "shapes" not in s:  # the file could not be read at all
        return head
    lines = [head]
    shapes = ", ".join(f"{k} {v}" for k, v in sorted(s.get("shapes", {}).items())) or "-"
    lines.append(f"  shape            {shapes}")
    lines.append(f"  duplicates       {s.get('duplicates', 0)}")
    if s.get("normalised"):
        lines.append(f"  normalised       {s['normalised']} (whole conversations: prompt turns split off the answers)")
    if "identical_pairs" in s:
        lines.append(f"  identical pairs  {s['identical_pairs']}")
    if "completions_per_record" in s:
        c = s["completions_per_record"]
        lines.append(f"  completions      {c['min']}-{c['max']} per record, {s['scored']} records scored")
    header = "".join(f"{'p' + str(p):>7}" for p in PERCENTILES) + f"{'max':>7}"
    lines.append(f"  length ({unit})".ljust(20) + header)
    for name, summary in s.get("lengths", {}).items():
        if summary:
            cells = "".join(f"{summary[f'p{p}']:>7}" for p in PERCENTILES) + f"{summary['max']:>7}"
            lines.append(f"    {name}".ljust(20) + cells)
    ratio = s.get("length_ratio")
    if ratio:
        lines.append(
            f"  chosen/rejected  {ratio['mean_ratio']:.2f}x mean length; chosen longer in "
            f"{ratio['chosen_longer']:.0%} of pairs, shorter in {ratio['chosen_shorter']:.0%}"
        )
    if s.get("agreement"):
        lines.append(f"  agreement        {agreement_line(s['agreement'])}")
    return "\n".join(lines)


def _warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)  # one line, grep-able


def validate_file(path: Path, kind: str | None, lengths: Lengths, split: str | None = None) -> dict[str, Any]:
    """Read one file, report every problem, and measure its valid records."""
    try:
        result = io.read(path, kind, split=split, max_problems=10**9)
    except InputError as exc:  # unreadable as a whole: missing, a directory, no permission
        return {"path": str(path), "kind": kind or "", "problems": [str(exc)], "warnings": [], "stats": {"records": 0}}
    return {
        "path": str(path),
        "kind": result.kind,
        "problems": [p.render(path) for p in result.problems],
        "warnings": list(result.warnings),
        "stats": file_stats(result, lengths),
    }


def command(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE",
            help="Files to check: JSONL, Parquet, JSON array, saved dataset dir, or hub id with --split.",
            show_default=False,
        ),
    ],
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help=f"{', '.join(io.KINDS)} (default: guessed from the first record).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Count lengths in this model's tokens (its tokenizer only); else words."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the stats as JSON on stdout.")] = False,
    split: Annotated[str | None, typer.Option("--split", help="The split to read of a dataset dir or hub id.")] = None,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Allow the tokenizer repo's own Python code.")
    ] = False,
) -> None:
    """Check data files: every problem at once, then counts, shapes, duplicates and lengths."""
    if kind is not None and kind not in io.KINDS:
        raise InputError(f"--kind {kind}: expected one of {', '.join(io.KINDS)}")
    lengths: Lengths = word_lengths
    unit = "words"
    if model:
        lengths = token_lengths_for(model, trust_remote_code)
        unit = f"tokens of {model}"
    reports = []
    for path in files:
        report = validate_file(path, kind, lengths, split)
        reports.append(report)
        for w in report["warnings"]:
            _warn(w)
        for line in report["problems"]:
            console.print(escape(line), soft_wrap=True)
        bias = length_bias_warning(path, report["stats"].get("length_ratio") or {})
        if bias:
            _warn(bias)
            report["warnings"].append(bias)
        if not as_json:
            print(render(report, unit))
    if as_json:
        print(json.dumps({"length_unit": unit, "files": reports}, indent=2, ensure_ascii=False))
    n_problems = sum(len(r["problems"]) for r in reports)
    if n_problems:
        bad = [r["path"] for r in reports if r["problems"]]
        raise InputError(f"{n_problems} problem{'s' if n_problems > 1 else ''} in {', '.join(bad)}")
