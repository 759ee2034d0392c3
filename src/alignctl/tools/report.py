"""Plot training metrics of one or more runs and write a summary page.

    alignctl report runs/dpo-b0.1 runs/dpo-b0.3 -o report/

Reads what every training stage leaves behind (`metrics.jsonl`, `alignctl.json`; for `iterate`
runs also `round-N/model/metrics.jsonl` and `round-N/eval.json`) and writes into the output dir:

- `<metric>.png`, one per metric logged at two or more steps, one line per run, over logging steps
  or (`--x time`) training minutes from each line's `elapsed` (file names are
  the metric names with `/` and other odd characters turned into `_`: `rewards_margins.png`),
- `<run>_rounds.png` per iterate run: mean reward (model vs baseline), mean length, and win rate
  with its interval, round by round,
- `index.md` and `index.html` (the same summary; images linked by relative path),
- `series.json`: how many points were plotted per run per metric, so a script (or a test) can
  check nothing was dropped.

Every input is read and checked before anything is written. matplotlib is imported inside the
plotting functions (Agg canvas, no pyplot global state), so importing this module stays cheap.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from alignctl.console import info
from alignctl.errors import InputError, OutputError
from alignctl.tools.report_plots import _wtl, plot_metric, plot_rounds, write_bytes
from alignctl.tools.report_runs import (
    ESTIMATE_NOTE,
    ESTIMATED,
    EVAL_KEYS,
    SMOOTH_ABOVE,
    Run,
    _metric_key,
    _number,
    _unique,
    load_run,
    sanitize,
)

Series = list[tuple[int, float]]
# ---------------------------------------------------------------- writing


def _fmt(value: object) -> str:
    number = _number(value)
    if number is None:
        return str(value)
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else f"{number:.4g}"


# A page is a list of blocks, rendered twice (markdown and HTML) so the two cannot drift:
# ("h1"|"h2"|"h3"|"p", text), ("table", header, rows), ("img", alt, src).
Block = tuple[Any, ...]


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|")


def _to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {rest[0]}\n")
        elif kind == "p":
            out.append(f"{rest[0]}\n")
        elif kind == "img":
            out.append(f"![{rest[0]}]({rest[1]})\n")
        elif kind == "table":
            header, rows = rest
            out.append("| " + " | ".join(_cell(h) for h in header) + " |")
            out.append("|" + "---|" * len(header))
            out.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
            out.append("")
    return "\n".join(out)


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;"
    "padding:3px 8px;text-align:left}th{background:#f3f3f3}img{max-width:100%;"
    "border:1px solid #eee}"
)


def _to_html(blocks: list[Block]) -> str:
    esc = html.escape
    body: list[str] = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3", "p"):
            body.append(f"<{kind}>{esc(str(rest[0]))}</{kind}>")
        elif kind == "img":
            body.append(f'<p><img src="{esc(rest[1])}" alt="{esc(rest[0])}"></p>')
        elif kind == "table":
            header, rows = rest
            head = "".join(f"<th>{esc(str(h))}</th>" for h in header)
            cells = ("".join(f"<td>{esc(str(c))}</td>" for c in row) for row in rows)
            body.append(f"<table><tr>{head}</tr>" + "".join(f"<tr>{c}</tr>" for c in cells) + "</table>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>alignctl report</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _final_metrics(run: Run) -> tuple[dict[str, object], str]:
    final = run.manifest.get("final_metrics")
    if isinstance(final, dict) and final:
        return final, "from alignctl.json"
    return {k: v[-1][1] for k, v in sorted(run.series.items())}, "last logged value"


def _config_values(run: Run) -> dict[str, object]:
    """Scalar config values; the manifest stores each as `{"value": v, "source": s}`."""
    config = run.manifest.get("config")
    out: dict[str, object] = {}
    for key, value in (config if isinstance(config, dict) else {}).items():
        if isinstance(value, dict) and "value" in value:
            value = value["value"]
        if not isinstance(value, (dict, list)):
            out[key] = value
    return out


def _config_differences(runs: list[Run]) -> list[list[str]]:
    configs = [_config_values(r) for r in runs]
    rows = []
    for key in sorted({k for c in configs for k in c}):
        values = [c.get(key, "—") for c in configs]
        # A run without the key (another stage, no manifest) is not a difference by itself.
        if len({json.dumps(c[key], default=str) for c in configs if key in c}) > 1:
            rows.append([key, *(_fmt(v) for v in values)])
    return rows


def _labels(paths: list[Path]) -> list[str]:
    """Run dir names; where two different dirs share a name, add parent dirs until they differ."""
    parts = [p.resolve().parts[1:] for p in paths]  # without the root anchor
    depth = [1] * len(paths)
    while True:
        labels = ["/".join(pp[-d:]) for pp, d in zip(parts, depth, strict=True)]
        clashes = [
            i
            for i, (lab, pp) in enumerate(zip(labels, parts, strict=True))
            if depth[i] < len(pp) and any(o == lab and op != pp for o, op in zip(labels, parts, strict=True))
        ]
        if not clashes:
            break
        for i in clashes:
            depth[i] += 1
    # the same dir given twice: number the repeats
    return [f"{lab} ({labels[:i].count(lab) + 1})" if lab in labels[:i] else lab for i, lab in enumerate(labels)]


ROUND_HEADER = ["round", "reward (model)", "reward (baseline)", "length (model)", "length (baseline)"]
ROUND_HEADER += ["W-T-L", "win rate [interval]", "length-controlled [interval]"]


def _round_rows(run: Run) -> list[list[object]]:
    rows: list[list[object]] = []
    for number, e in run.rounds:
        model, base = e.get("model") or {}, e.get("baseline") or {}
        wtl = _wtl(e)
        interval = f" [{_fmt(e['low'])}, {_fmt(e['high'])}]" if "low" in e and "high" in e else ""
        lc = e.get("length_controlled") or {}  # older eval.json files lack it
        lc_interval = f" [{_fmt(lc['ci'][0])}, {_fmt(lc['ci'][1])}]" if lc.get("ci") else ""
        rows.append(
            [
                number,
                *(_fmt(side.get(k, "—")) for k in EVAL_KEYS for side in (model, base)),
                wtl,
                f"{_fmt(e.get('win_rate', '—'))}{interval}",
                f"{_fmt('—' if lc.get('win_rate') is None else lc['win_rate'])}{lc_interval}",
            ]
        )
    return rows


X_AXES = ("step", "time")


def _x_legend(runs: list[Run], x: str, untimed: list[Run]) -> str:
    if x != "time":
        return "x axis: logging step."
    text = "x axis: training minutes (each metrics line's `elapsed`: the --max-minutes clock)."
    if estimated := [r.label for r in runs if r.time_source == ESTIMATED]:
        text += f" {', '.join(estimated)}: {ESTIMATE_NOTE} (alignctl.json `training`: seconds / steps)"
        text += ", as its metrics.jsonl predates `elapsed`."
    if untimed:
        text += f" Not plotted (no `elapsed`, no `training` record): {', '.join(r.label for r in untimed)}."
    return text


def _page(
    runs: list[Run],
    figures: list[tuple[str, str, dict[str, int]]],
    round_files: dict[str, str],
    x: str = "step",
    untimed: list[Run] | None = None,
) -> list[Block]:
    overview = [
        [
            r.label,
            r.stage,
            str(r.path),
            r.lines,
            max((s for v in r.series.values() for s, _ in v), default="—"),
            "—" if r.last_epoch is None else _fmt(r.last_epoch),
        ]
        for r in runs
    ]
    header = ["run", "stage", "dir", "log lines", "last step", "epochs"]
    blocks: list[Block] = [("h1", "alignctl report"), ("table", header, overview)]
    if len(runs) > 1 and (diffs := _config_differences(runs)):
        blocks.append(("h2", "Config differences"))
        blocks.append(("table", ["key", *(r.label for r in runs)], diffs))
    for r in runs:
        blocks.append(("h2", f"{r.label} ({r.stage})"))
        final, source = _final_metrics(r)
        if final:
            rows = [[k, _fmt(v)] for k, v in final.items()]
            blocks += [("p", f"Final metrics ({source}):"), ("table", ["metric", "value"], rows)]
        else:
            blocks.append(("p", "Nothing logged."))
        if r.rounds:
            blocks += [("p", "Eval per round:"), ("table", ROUND_HEADER, _round_rows(r))]
            blocks.append(("img", f"{r.label} eval per round", round_files[r.label]))
    if not figures:
        blocks.append(("p", "No metric was logged at two or more steps: no plots."))
        return blocks
    blocks.append(("h2", "Metrics"))
    legend = f"{_x_legend(runs, x, untimed or [])} Series with more than {SMOOTH_ABOVE} points show "
    legend += "the raw points (faint) and an EMA (solid)."
    blocks.append(("p", legend))
    for metric, file, counts in figures:
        points = ", ".join(f"{label} {n}" for label, n in counts.items())
        blocks += [("h3", metric), ("img", metric, file), ("p", f"points plotted: {points}")]
    return blocks


def run_report(run_dirs: list[Path], out_dir: Path, x: str = "step") -> Path:
    """Read every run dir (all checks before any write), plot over `x` ("step" or "time"), write
    the index; returns the path of `index.md`."""
    if not run_dirs:
        raise InputError("report: give at least one run directory")
    if x not in X_AXES:
        raise InputError(f"report: --x must be one of {', '.join(X_AXES)}, got {x!r}")
    paths = [Path(p) for p in run_dirs]
    runs = [load_run(p, label) for p, label in zip(paths, _labels(paths), strict=True)]
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create: {exc}") from None

    untimed = [r for r in runs if x == "time" and r.lines and r.time_source is None]
    for r in untimed:
        info(f"report: {r.label}: no elapsed in its metrics, no training record in alignctl.json; not in time plots")
    plottable = [r for r in runs if r not in untimed]
    metrics = sorted({m for r in runs for m in r.series}, key=_metric_key)
    # A metric logged once (train_runtime, total_flos...) would make a near-empty plot; it
    # shows in the final-metrics tables instead.
    plotted = [m for m in metrics if any(len(r.series.get(m, [])) >= 2 for r in plottable)]
    used: set[str] = set()
    per_run: dict[str, dict[str, Any]] = {r.label: {"dir": str(r.path), "stage": r.stage, "points": {}} for r in runs}
    for r in runs:
        if r.round_points:
            per_run[r.label]["rounds"] = r.round_points
    figures: list[tuple[str, str, dict[str, int]]] = []
    for metric in plotted:
        file = _unique(sanitize(metric), used)
        having = [(i, r) for i, r in enumerate(runs) if r.series.get(metric) and r in plottable]
        counts = plot_metric(metric, having, out_dir / file, x)
        for label, n in counts.items():
            per_run[label]["points"][metric] = n
        figures.append((metric, file, counts))
    round_files: dict[str, str] = {}
    for r in runs:
        if r.rounds:
            round_files[r.label] = _unique(f"{sanitize(r.label)}_rounds", used)
            plot_rounds(r, out_dir / round_files[r.label])

    blocks = _page(runs, figures, round_files, x, untimed)
    if x == "time":
        for r in runs:
            per_run[r.label]["time"] = r.time_source
    series = {"x": x, "runs": per_run, "plots": {m: f for m, f, _ in figures}}
    write_bytes(out_dir / "series.json", (json.dumps(series, indent=2) + "\n").encode())
    write_bytes(out_dir / "index.html", _to_html(blocks).encode())
    summary = out_dir / "index.md"
    write_bytes(summary, _to_markdown(blocks).encode())
    info(f"report: {len(runs)} run(s), {len(figures)} metric plot(s) -> {out_dir}")
    return summary


def command(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_DIR", help="Run directories (a stage's output dir, or an iterate run).", show_default=False
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the PNGs and index.")] = Path("report"),
    x: Annotated[
        str,
        typer.Option(
            "--x",
            help="x axis of the metric plots: step (logging step) or time (training minutes, from each "
            "metrics line's `elapsed`; estimated from alignctl.json for runs logged before it existed).",
        ),
    ] = "step",
) -> None:
    """Plot training metrics of one or more runs and write a summary page (index.md; its path on stdout)."""
    typer.echo(str(run_report(run_dirs, output, x)))
