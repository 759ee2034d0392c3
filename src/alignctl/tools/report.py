"""Plot training metrics of one or more runs and write a summary page.

    alignctl report runs/dpo-b0.1 runs/dpo-b0.3 -o report/

Reads what every training stage leaves behind (`metrics.jsonl`, `alignctl.json`; for `iterate`
runs also `round-N/model/metrics.jsonl` and `round-N/eval.json`) and writes into the output dir:

- `<metric>.png`, one per metric logged at two or more steps, one line per run (file names are
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
import io
import json
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from alignctl.console import info, warn
from alignctl.errors import InputError, OutputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Series = list[tuple[int, float]]

# Not metrics: the x axis itself, and the epoch counter TRL logs next to every metric.
AXIS_KEYS = frozenset({"step", "epoch"})
# Metrics people look at first come first in the report; anything else follows alphabetically.
METRIC_ORDER = ("loss", "eval_loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")
METRIC_ORDER += ("objective/scores", "objective/kl", "reward", "kl", "completions/mean_length")
TRAILING_METRICS = ("learning_rate", "grad_norm")
ROUND_DIR = re.compile(r"round-(\d+)$")
EVAL_KEYS = ("mean_reward", "mean_length")
SMOOTH_ABOVE = 20  # more raw points than this get an EMA line on top
NEVER_SMOOTH = frozenset({"learning_rate"})  # a schedule, not noise: smoothing would lie


@dataclass
class Run:
    """One RUN_DIR as read from disk: its series (rounds concatenated for iterate runs)."""

    path: Path
    label: str
    stage: str
    manifest: dict[str, Any]
    series: dict[str, Series]
    lines: int = 0  # logging lines read
    last_epoch: float | None = None
    boundaries: list[tuple[int, int]] = field(default_factory=list)  # (first step, round no.)
    rounds: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (round no., eval)
    round_points: dict[str, dict[str, int]] = field(default_factory=dict)


def load_metrics(path: Path) -> dict[str, Series]:
    """Read a `metrics.jsonl`: `{metric: [(step, value), ...]}` in file order.

    Each line is `{"step": int, "epoch": float, "<metric>": number, ...}`; a line may carry only
    some metrics (eval lines). Values that are not finite numbers (strings, null, bools, NaN) are
    ignored; `step` and `epoch` are the axis, not metrics. Blank lines are skipped.
    """
    return _read_metrics(path)[0]


def _read_metrics(path: Path) -> tuple[dict[str, Series], int, float | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (every training stage writes one)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    series: dict[str, Series] = {}
    lines = 0
    last_epoch: float | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}:"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where} not valid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(record, dict):
            raise InputError(f"{where} expected a JSON object, got {type(record).__name__}")
        step = record.get("step")
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise InputError(f"{where} 'step' must be a non-negative integer, got {step!r}")
        lines += 1
        epoch = record.get("epoch")
        if _number(epoch) is not None:
            last_epoch = float(epoch)
        for key, value in record.items():
            number = _number(value)
            if key not in AXIS_KEYS and number is not None:
                series.setdefault(key, []).append((step, number))
    return series, lines, last_epoch


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}:1: expected a JSON object, got {type(data).__name__}")
    return data


def load_run(path: Path, label: str | None = None) -> Run:
    """Read one RUN_DIR (a stage's output dir, or an iterate run holding `round-N/` dirs)."""
    if not path.is_dir():
        raise InputError(f"{path}: run directory not found")
    from alignctl import runs

    manifest_path = runs.manifest_path(path)
    manifest = runs.read_manifest(path, strict=True) or {}
    if not manifest:
        warn(f"{manifest_path}: no manifest; stage unknown, final metrics from the last log line")
    stage = str(manifest.get("stage", "unknown"))
    run = Run(path=path, label=label or path.name, stage=stage, manifest=manifest, series={})
    if stage == "iterate":
        _load_rounds(run)
        return run
    metrics_path = path / "metrics.jsonl"
    if not metrics_path.is_file() and (path / "model" / "metrics.jsonl").is_file():
        metrics_path = path / "model" / "metrics.jsonl"  # a single iterate round dir
    run.series, run.lines, run.last_epoch = _read_metrics(metrics_path)
    if not run.lines:
        warn(f"{metrics_path}: empty, nothing logged; the run is listed but not plotted")
    return run


def _round_dirs(run: Run) -> list[tuple[int, Path, dict[str, Any]]]:
    rounds = run.manifest.get("rounds")
    if rounds is None:  # an interrupted iterate run: take the round dirs that exist
        found = [(int(m.group(1)), p) for p in run.path.iterdir() if (m := ROUND_DIR.match(p.name))]
        return [(n, p, {}) for n, p in sorted(found)]
    if not isinstance(rounds, list):
        raise InputError(f"{run.path / 'alignctl.json'}: 'rounds' must be a list")
    out = []
    for i, entry in enumerate(rounds, start=1):
        if not isinstance(entry, dict):
            raise InputError(f"{run.path / 'alignctl.json'}: rounds[{i - 1}] must be an object")
        number = int(entry.get("round", i))
        out.append((number, run.path / str(entry.get("dir", f"round-{number}")), entry))
    return out


def _load_rounds(run: Run) -> None:
    """Concatenate the rounds' metrics on one step axis: round k starts after round k-1 ended."""
    offset = 0
    for number, round_dir, entry in _round_dirs(run):
        if not round_dir.is_dir():
            raise InputError(f"{round_dir}: round {number} directory not found")
        metrics_path = round_dir / "model" / "metrics.jsonl"
        series, lines, epoch = _read_metrics(metrics_path)
        if not lines:
            warn(f"{metrics_path}: empty, nothing logged in round {number}")
        run.lines += lines
        run.last_epoch = epoch if epoch is not None else run.last_epoch
        run.boundaries.append((offset, number))
        run.round_points[f"round-{number}"] = {k: len(v) for k, v in series.items()}
        last = offset
        for key, points in series.items():
            run.series.setdefault(key, []).extend((offset + s, v) for s, v in points)
            last = max([last, *(offset + s for s, _ in points)])
        offset = last
        eval_path = round_dir / "eval.json"
        evaluation = _read_json(eval_path) if eval_path.is_file() else entry.get("eval")
        if isinstance(evaluation, dict):
            run.rounds.append((number, evaluation))
        else:
            warn(f"{eval_path}: missing; round {number} has no eval to plot")


def sanitize(name: str) -> str:
    """A metric name as a file name: `rewards/margins` -> `rewards_margins`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "metric"


def _unique(stem: str, used: set[str]) -> str:
    name, n = f"{stem}.png", 2
    while name in used:
        name, n = f"{stem}-{n}.png", n + 1
    used.add(name)
    return name


def _metric_key(name: str) -> tuple[int, int, str]:
    if name in METRIC_ORDER:
        return (0, METRIC_ORDER.index(name), name)
    if name in TRAILING_METRICS:
        return (2, TRAILING_METRICS.index(name), name)
    return (1, 0, name)


def ema(values: list[float], span: float) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing), so the
    first points are not pulled towards zero: s_t = a*x_t + (1-a)*s_{t-1}, divided by 1-(1-a)^t.
    """
    alpha = 2.0 / (span + 1.0)
    out, acc, weight = [], 0.0, 0.0
    for x in values:
        acc = alpha * x + (1 - alpha) * acc
        weight = alpha + (1 - alpha) * weight
        out.append(acc / weight)
    return out


def _segments(points: Series, boundaries: list[tuple[int, int]]) -> list[tuple[list[int], list[float]]]:
    """Points sorted by step and split at round boundaries (no boundaries: one segment)."""
    starts = [start for start, _ in boundaries[1:]]
    groups: dict[int, Series] = {}
    for step, value in sorted(points, key=lambda p: p[0]):
        groups.setdefault(sum(step > s for s in starts), []).append((step, value))
    return [([s for s, _ in g], [v for _, v in g]) for _, g in sorted(groups.items())]


def _span(n: int) -> float:
    return max(5.0, n / 15.0)  # light: ~5 points for short runs, ~7% of the run for long ones


# ---------------------------------------------------------------- plotting


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    _atomic_write(path, buffer.getvalue())


def plot_metric(metric: str, runs: list[tuple[int, Run]], path: Path) -> dict[str, int]:
    """One metric, one line per run (colour fixed by the run's position on the command line).
    Returns the number of points plotted per run label."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(8.0, 4.5)
    ax = fig.add_subplot()
    plotted: dict[str, int] = {}
    smoothed = False
    for index, run in runs:
        color, label = f"C{index % 10}", run.label
        smooth = len(run.series[metric]) > SMOOTH_ABOVE and metric not in NEVER_SMOOTH
        smoothed |= smooth
        # Each iterate round is a fresh training run: its metrics restart, so the line breaks
        # at the boundary instead of drawing a misleading jump, and the EMA restarts too.
        for steps, values in _segments(run.series[metric], run.boundaries):
            if smooth:
                ax.plot(steps, values, color=color, alpha=0.3, lw=0.8, marker=".", ms=3)
                smooth_values = ema(values, _span(len(values)))
                ax.plot(steps, smooth_values, color=color, lw=2, label=label)
            else:
                style = {"lw": 1.5, "marker": "o", "ms": 4}
                ax.plot(steps, values, color=color, label=label, **style)
            label = None  # one legend entry per run
        for start, number in run.boundaries[1:]:
            ax.axvline(start + 0.5, color=color, ls=":", lw=1, alpha=0.7)
            ax.annotate(
                f"round {number}",
                (start + 0.5, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -3),
                textcoords="offset points",
                va="top",
                fontsize=8,
                color=color,
            )
        plotted[run.label] = len(run.series[metric])
    ax.set_title(metric if len(runs) == 1 else f"{metric} ({len(runs)} runs)")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.35)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(runs) > 1 or smoothed:
        title = "faint: raw, solid: EMA" if smoothed else None
        ax.legend(title=title, title_fontsize=8, fontsize=9, loc="best")
    _save(fig, path)
    return plotted


def _wtl(e: dict[str, Any]) -> str:
    return "-".join(str(e.get(k, "?")) for k in ("wins", "ties", "losses"))


def plot_rounds(run: Run, path: Path) -> None:
    """Per-round eval of an iterate run: reward and length (model vs baseline), win rate."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(13.0, 4.2)
    axes = fig.subplots(1, 3)
    numbers = [n for n, _ in run.rounds]
    for ax, key, name in ((axes[0], "mean_reward", "mean reward"), (axes[1], "mean_length", "mean length")):
        for who, style in (("model", "o-"), ("baseline", "s--")):
            ys = [_number((e.get(who) or {}).get(key)) for _, e in run.rounds]
            if any(y is not None for y in ys):
                ax.plot(numbers, [math.nan if y is None else y for y in ys], style, label=who)
        ax.set_title(f"{name}: model vs baseline")
        ax.set_ylabel(name)
    ax = axes[2]
    rates = [(n, e) for n, e in run.rounds if _number(e.get("win_rate")) is not None]
    for n, e in rates:
        p = float(e["win_rate"])
        low, high = _number(e.get("low")), _number(e.get("high"))
        yerr = [[max(p - low, 0.0)], [max(high - p, 0.0)]] if low is not None and high is not None else None
        ax.errorbar([n], [p], yerr=yerr, fmt="o", color="C2", capsize=5, lw=1.5)
    if rates:
        ax.plot([n for n, _ in rates], [float(e["win_rate"]) for _, e in rates], color="C2", alpha=0.5)
    ax.axhline(0.5, color="grey", ls="--", lw=1, label="parity (0.5)")
    ax.set_ylim(0, 1)
    ax.set_title("win rate vs baseline (interval)")
    ax.set_ylabel("win rate")
    for ax in axes:
        ax.set_xlabel("round")
        ax.grid(True, alpha=0.35)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if numbers:
            ax.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9)
    if len(numbers) <= 8:  # W-T-L under each round's tick; with more rounds the table has them
        axes[2].set_xticks(numbers, [f"{n}\n{_wtl(e)}" for n, e in run.rounds])
        axes[2].set_xlabel("round (wins-ties-losses)")
    fig.suptitle(f"{run.label}: eval per round")
    _save(fig, path)


# ---------------------------------------------------------------- writing


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same dir, then rename: a crash never leaves a
    half-written file under the real name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as handle:  # plain open: the file gets the umask's mode
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
ROUND_HEADER += ["W-T-L", "win rate [interval]"]


def _round_rows(run: Run) -> list[list[object]]:
    rows: list[list[object]] = []
    for number, e in run.rounds:
        model, base = e.get("model") or {}, e.get("baseline") or {}
        wtl = _wtl(e)
        interval = f" [{_fmt(e['low'])}, {_fmt(e['high'])}]" if "low" in e and "high" in e else ""
        rows.append(
            [
                number,
                *(_fmt(side.get(k, "—")) for k in EVAL_KEYS for side in (model, base)),
                wtl,
                f"{_fmt(e.get('win_rate', '—'))}{interval}",
            ]
        )
    return rows


def _page(runs: list[Run], figures: list[tuple[str, str, dict[str, int]]], round_files: dict[str, str]) -> list[Block]:
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
    legend = f"x axis: logging step. Series with more than {SMOOTH_ABOVE} points show "
    legend += "the raw points (faint) and an EMA (solid)."
    blocks.append(("p", legend))
    for metric, file, counts in figures:
        points = ", ".join(f"{label} {n}" for label, n in counts.items())
        blocks += [("h3", metric), ("img", metric, file), ("p", f"points plotted: {points}")]
    return blocks


def run_report(run_dirs: list[Path], out_dir: Path) -> Path:
    """Read every run dir (all checks before any write), plot, write the index; returns
    the path of `index.md`."""
    if not run_dirs:
        raise InputError("report: give at least one run directory")
    paths = [Path(p) for p in run_dirs]
    runs = [load_run(p, label) for p, label in zip(paths, _labels(paths), strict=True)]
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create: {exc}") from None

    metrics = sorted({m for r in runs for m in r.series}, key=_metric_key)
    # A metric logged once (train_runtime, total_flos...) would make a near-empty plot; it
    # shows in the final-metrics tables instead.
    plotted = [m for m in metrics if any(len(r.series.get(m, [])) >= 2 for r in runs)]
    used: set[str] = set()
    per_run: dict[str, dict[str, Any]] = {r.label: {"dir": str(r.path), "stage": r.stage, "points": {}} for r in runs}
    for r in runs:
        if r.round_points:
            per_run[r.label]["rounds"] = r.round_points
    figures: list[tuple[str, str, dict[str, int]]] = []
    for metric in plotted:
        file = _unique(sanitize(metric), used)
        having = [(i, r) for i, r in enumerate(runs) if r.series.get(metric)]
        counts = plot_metric(metric, having, out_dir / file)
        for label, n in counts.items():
            per_run[label]["points"][metric] = n
        figures.append((metric, file, counts))
    round_files: dict[str, str] = {}
    for r in runs:
        if r.rounds:
            round_files[r.label] = _unique(f"{sanitize(r.label)}_rounds", used)
            plot_rounds(r, out_dir / round_files[r.label])

    blocks = _page(runs, figures, round_files)
    series = {"runs": per_run, "plots": {m: f for m, f, _ in figures}}
    _atomic_write(out_dir / "series.json", (json.dumps(series, indent=2) + "\n").encode())
    _atomic_write(out_dir / "index.html", _to_html(blocks).encode())
    summary = out_dir / "index.md"
    _atomic_write(summary, _to_markdown(blocks).encode())
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
) -> None:
    """Plot training metrics of one or more runs and write a summary page (index.md; its path on stdout)."""
    typer.echo(str(run_report(run_dirs, output)))
