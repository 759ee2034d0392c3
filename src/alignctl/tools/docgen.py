"""Generate docs/cli.md from the commands' own --help (`make docs`; a test checks it is current)."""

from __future__ import annotations

import os

import typer.main
from typer.testing import CliRunner


def _walk(group, prefix: list[str]):
    yield prefix
    group = getattr(group, "real", group)  # a lazily loaded command: the command it stands for
    for name in sorted(getattr(group, "commands", {}) or {}):
        yield from _walk(group.commands[name], [*prefix, name])


def render() -> str:
    from alignctl.cli import app

    os.environ["COLUMNS"] = "100"  # fixed width, so the text does not depend on the terminal
    os.environ["TERM"] = "dumb"
    runner = CliRunner()
    root = typer.main.get_command(app)
    parts = [
        "# alignctl command reference\n",
        "Generated from each command's `--help` by `make docs`; `tests/test_cli.py` fails when it drifts.\n",
    ]
    for path in _walk(root, []):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
        title = " ".join(["alignctl", *path])
        body = "\n".join(line.rstrip() for line in result.stdout.strip("\n").splitlines())
        parts.append(f"## `{title}`\n\n```text\n{body}\n```\n")
    return "\n".join(parts)


def render_presets() -> str:
    """docs/presets.md: every shipped preset value and its source in the chapter."""
    from alignctl import config

    parts = [
        "# Presets\n",
        "Generated from `presets/*.yaml` by `make docs`; `tests/test_cli.py` fails when it drifts.",
        "Each stage's default preset carries the chapter's values; `-cpu` variants are documented",
        "departures for a 2-core CPU budget. Precedence: built-in defaults < `--preset` < `--config FILE`",
        "< `--set key=value` < explicit flags. `alignctl presets show STAGE` prints the resolved values.",
        "The stages built on a TRL trainer (dpo, train-rm, grpo, online-dpo) also take any other field of",
        "that trainer's config (`DPOConfig`, `RewardConfig`, `GRPOConfig`, `OnlineDPOConfig`) by TRL's name,",
        "typed by TRL (`--set label_smoothing=0.1`); fields alignctl sets itself (`output_dir`,",
        "`save_strategy`, ...) are refused with what to use instead.\n",
    ]
    for name in config.list_presets():
        values, sources, meta = config.load_preset(name)
        head = f"## `{name}` (stage `{meta.get('stage', '?')}`)"
        if meta.get("extends"):
            head += f", extends `{meta['extends']}`"
        parts.append(head + "\n")
        if meta.get("about"):
            parts.append(f"{meta['about']}\n")
        parts.append("| key | value | source |\n|---|---|---|")
        for key, value in values.items():
            src = sources.get(key, "").replace("|", "\\|")
            parts.append(f"| `{key}` | `{value}` | {src} |")
        if own := {k: d for k, d in (meta.get("departures") or {}).items() if d is not None}:
            parts.append("\nDepartures from the chapter's run, on purpose:\n")
            parts.append("| key | chapter's run | why |\n|---|---|---|")
            for key, d in own.items():
                cells = [str(d[c]).replace("|", "\\|") for c in ("chapter", "why")]
                parts.append(f"| `{key}` | {cells[0]} | {cells[1]} |")
        parts.append("")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    import sys

    print(render_presets() if sys.argv[1:] == ["presets"] else render(), end="")
