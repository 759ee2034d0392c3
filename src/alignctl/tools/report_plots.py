"""The plots of `alignctl report`: one PNG per metric (one line per run), and per-round eval plots
of iterate runs. matplotlib is imported inside the functions (Agg canvas, no pyplot state)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignctl.io import atomic_path
from alignctl.tools.report_runs import (
    ESTIMATE_NOTE,
    ESTIMATED,
    NEVER_SMOOTH,
    SMOOTH_ABOVE,
    Run,
    _number,
    _span,
    ema,
    xy_segments,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
    write_bytes(path, buffer.getvalue())


LINE_STYLES = ("-", "--", "-.", ":")


def line_look(index: int) -> tuple[str, str]:
    """(colour, line style) of the run at `index` on the command line: ten colours, then the same
    ten dashed, and so on, so up to 40 runs in one plot stay apart."""
    return f"C{index % 10}", LINE_STYLES[index // 10 % len(LINE_STYLES)]


def plot_metric(metric: str, runs: list[tuple[int, Run]], path: Path, x: str = "step") -> dict[str, int]:
    """One metric, one line per run (its look fixed by its position on the command line), over
    logging steps (x="step") or training minutes (x="time", `xy_segments`). Returns the number of
    points plotted per run label."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(8.0, 4.5)
    ax = fig.add_subplot()
    plotted: dict[str, int] = {}
    smoothed = estimated = False
    for index, run in runs:
        (color, dashes), label = line_look(index), run.label
        if x == "time" and run.time_source == ESTIMATED:
            label, estimated = f"{label} ({ESTIMATE_NOTE})", True
        smooth = len(run.series[metric]) > SMOOTH_ABOVE and metric not in NEVER_SMOOTH
        smoothed |= smooth
        plotted[run.label] = 0
        # Each iterate round is a fresh training run: its metrics restart, so the line breaks
        # at the boundary instead of drawing a misleading jump, and the EMA restarts too.
        for steps, values in xy_segments(run, metric, x):
            plotted[run.label] += len(values)
            if smooth:
                ax.plot(steps, values, color=color, alpha=0.3, lw=0.8, marker=".", ms=3)
                smooth_values = ema(values, _span(len(values)))
                ax.plot(steps, smooth_values, color=color, lw=2, ls=dashes, label=label)
            else:
                style = {"lw": 1.5, "ls": dashes, "marker": "o", "ms": 4}
                ax.plot(steps, values, color=color, label=label, **style)
            label = None  # one legend entry per run
        for start, number in run.boundaries[1:]:
            if x == "time" and start not in run.seconds:
                continue
            at = run.seconds[start] / 60.0 if x == "time" else start + 0.5
            ax.axvline(at, color=color, ls=":", lw=1, alpha=0.7)
            ax.annotate(
                f"round {number}",
                (at, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -3),
                textcoords="offset points",
                va="top",
                fontsize=8,
                color=color,
            )
    ax.set_title(metric if len(runs) == 1 else f"{metric} ({len(runs)} runs)")
    ax.set_xlabel("training time (minutes)" if x == "time" else "step")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.35)
    if x != "time":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(runs) > 1 or smoothed or estimated:
        title = "faint: raw, thick: EMA" if smoothed else None
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


def write_bytes(path: Path, data: bytes) -> None:
    """Every file of the report is written under a temporary name and renamed (io.atomic_path)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
