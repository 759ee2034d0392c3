"""A person at the terminal as a pairwise reward source: the chapter's "由人工挑选出好的和差的答案".

Three screens, each answered with single keys (no Enter):

- pairwise (`decide`): the prompt and two candidates side by side;
  a  A is better   b  B is better   t  tie   s  skip   u  undo   q  quit
- best/worst (`screen(kind="best-worst")`): the prompt and all N answers, numbered; press the
  best's number, then the worst's: one screen per prompt whatever N. After the best, `e` opens
  $EDITOR (VISUAL, else vi) on that answer to write a better one ("人工编写出更好的答案"): the
  saved text becomes the chosen side.
- ranking (`screen(kind="rank")`): press the numbers best first; the last is implied.

Long answers are cut to fit the screen with a marker; `v` shows every answer in full in the pager
($PAGER, less), where they scroll. Undo and quit are raised as `Undo` / `Quit` so the caller,
which owns the journal, can step back or stop (`label` saves after every screen, so a rerun
resumes at the first one without an answer).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
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

    # ----------------------------------------------------------------- one screen per prompt

    def show_all(
        self, prompt: Any, answers: list[Any], marks: dict[int, str], hint: str, *, full: bool = False
    ) -> None:
        """The prompt and answers numbered 1..N (those already picked marked); long ones cut to fit."""
        from rich.markup import escape
        from rich.panel import Panel

        c = self.console
        room = max(3, (c.size.height - 12) // max(1, len(answers)) - 2)
        c.rule(f"[bold]{escape(self.position)}[/]" if self.position else "")
        c.print(Panel(escape(prompt_text(prompt)), title="prompt", title_align="left", border_style="cyan"))
        for n, answer in enumerate(answers):
            lines = completion_text(answer).splitlines() or [""]
            body = escape("\n".join(lines if full else lines[:room])) or "[dim](empty)[/]"
            if not full and len(lines) > room:
                body += f"\n[dim]... {len(lines) - room} more lines (v shows all)[/]"
            mark = f" [reverse] {marks[n]} [/]" if n in marks else ""
            c.print(Panel(body, title=f"[bold]{n + 1}[/]{mark}", title_align="left", border_style="green"))
        c.print(hint)

    def screen(self, prompt: Any, answers: list[Any], kind: str) -> dict[str, Any]:
        """best-worst: {"order": [best, worst]} (+ "text" if they wrote a better answer); rank:
        {"order": all, best first}; {"order": []} all equally good; {"skipped": True}.
        Indices are positions in `answers` (2 to 9 of them: one digit each)."""
        n = len(answers)
        picked: list[int] = []
        text = None
        while True:
            if kind == "best-worst":
                step = "the best" if not picked else "the worst"
                extra = "   [bold]e[/] write a better answer" if picked and text is None else ""
            else:
                step, extra = f"number {len(picked) + 1} (best first)", ""
            hint = (
                f"press [bold]1-{n}[/]: {step}{extra}   [bold]t[/] all equal   [bold]s[/] skip   "
                "[bold]v[/] view all   [bold]u[/] undo   [bold]q[/] quit"
            )
            names = ("best", "worst") if kind == "best-worst" else [str(k) for k in range(1, n + 1)]
            marks = dict(zip(picked, names, strict=False))
            self.show_all(prompt, answers, marks, hint)
            key = self._key()
            if key == "u":
                if text is not None:
                    text = None
                elif picked:
                    picked.pop()
                else:
                    raise Undo
            elif key == "v":
                with self.console.pager(styles=True):
                    self.show_all(prompt, answers, marks, "", full=True)
            elif key == "t":
                return {"kind": kind, "order": []}
            elif key == "s":
                return {"kind": kind, "skipped": True}
            elif key == "e" and kind == "best-worst" and picked and text is None:
                text = self.edit(answers[picked[0]])
            elif key.isdigit() and 1 <= int(key) <= n and int(key) - 1 not in picked:
                picked.append(int(key) - 1)
                if kind == "best-worst" and len(picked) == 2:
                    return {"kind": kind, "order": picked} | ({"text": text} if text is not None else {})
                if kind == "rank" and len(picked) == n - 1:
                    return {"kind": kind, "order": [*picked, *(i for i in range(n) if i not in picked)]}

    def _key(self) -> str:
        key = read_key(self.fd).lower()
        if key in ("", "q", "\x03", "\x04"):  # end of input, q, Ctrl-C, Ctrl-D
            raise Quit
        return key

    def edit(self, answer: Any) -> str | None:
        """The person's better answer: $EDITOR on a file holding `answer`; None if left unchanged or empty."""
        original = completion_text(answer)
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
            f.write(original)
        try:
            try:
                subprocess.run([*shlex.split(editor), f.name], check=False)
            except OSError as exc:
                self.console.print(f"[red]cannot run the editor {editor!r}: {exc}[/] (set $EDITOR)")
                return None
            with open(f.name, encoding="utf-8") as fh:
                text = fh.read().strip("\n")
        finally:
            os.unlink(f.name)
        if not text.strip() or text == original.strip("\n"):
            self.console.print("[dim]unchanged: no answer written[/]")
            return None
        return text

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}
