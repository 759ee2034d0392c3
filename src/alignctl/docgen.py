"""Generate docs/cli.md from the commands' own --help (`make docs`; a test checks it is current)."""

from __future__ import annotations

import os
import typer.main
from typer.testing import CliRunner


def _walk(group, prefix: list[str]):
    yield prefix
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


if __name__ == "__main__":
    print(render(), end="")
