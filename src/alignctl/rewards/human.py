"""A person at the terminal as a pairwise reward source: the chapter's "由人工挑选出好的和差的答案".

Shows the prompt and two candidates side by side (rich) and reads one key:

    a  A is better     b  B is better     t  tie     s  skip     u  undo     q  quit

`decide()` returns a `Choice`; undo and quit are raised as `Undo` / `Quit` so the caller, which
owns the journal of choices, can step back or stop (`label` saves after every key, so a rerun
resumes at the first comparison without a choice).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from alignctl.errors import InputError
from alignctl.rewards import Choice
from alignctl.rewards.text import completion_text, prompt_text

KEYS = {"a": "A is better", "b": "B is better", "t": "tie", "s": "skip", "u": "undo", "q": "quit"}


class Undo(Exception):
    """The person asked to take back the previous choice."""


class Quit(Exception):
    """The person asked to stop (or the terminal closed)."""


def read_key(fd: int) -> str:
    """One keypress, without waiting for Enter (cbreak mode); '' at end of input."""
    import termios
    import tty

    try:
        old = termios.tcgetattr(fd)
    except termios.error:
        return os.read(fd, 1).decode("utf-8", "ignore")
    try:
        tty.setcbreak(fd)
        return os.read(fd, 1).decode("utf-8", "ignore")
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


class HumanSource:
    """Pairwise source: `decide(prompt, a, b) -> Choice`, asked of a person."""

    pairwise = True
    kind = "human"

    def __init__(self, *, console=None, stdin_fd: int | None = None) -> None:
        from alignctl.console import console as default_console

        self.console = console or default_console
        self.fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
        self.position = ""

    def check_terminal(self) -> None:
        if not os.isatty(self.fd):
            raise InputError("--by human needs an interactive terminal (stdin is not a TTY)")

    def show(self, prompt: Any, a: Any, b: Any) -> None:
        from rich.markup import escape
        from rich.panel import Panel
        from rich.table import Table

        c = self.console
        c.rule(f"[bold]{escape(self.position)}[/]" if self.position else "")
        c.print(Panel(escape(prompt_text(prompt)), title="prompt", title_align="left", border_style="cyan"))
        grid = Table.grid(expand=True, padding=(0, 1))
        grid.add_column(ratio=1)
        grid.add_column(ratio=1)
        grid.add_row(
            Panel(escape(completion_text(a)) or "[dim](empty)[/]", title="[bold]A[/]", border_style="green"),
            Panel(escape(completion_text(b)) or "[dim](empty)[/]", title="[bold]B[/]", border_style="magenta"),
        )
        c.print(grid)
        c.print("  ".join(f"[bold]{k}[/] {v}" for k, v in KEYS.items()))

    def decide(self, prompt: Any, a: Any, b: Any) -> Choice:
        self.show(prompt, a, b)
        while True:
            key = read_key(self.fd).lower()
            if key in ("", "q", "\x03", "\x04"):  # end of input, q, Ctrl-C, Ctrl-D
                raise Quit
            if key == "u":
                raise Undo
            if key in ("a", "b"):
                return Choice("ab".index(key), {"key": key})
            if key == "t":
                return Choice(None, {"key": "t"})
            if key == "s":
                return Choice(None, {"key": "s", "skipped": True})
            self.console.print(f"[dim]keys: {', '.join(KEYS)}[/]")

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}
