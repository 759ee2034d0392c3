"""`label --by human` at the terminal: a Textual app over one `core.Session`.

One screen per question, redrawn in place: the prompt, then the answers (A and B side by side for
a comparison; numbered 1..N for a best/worst or ranking screen), each in its own panel that
scrolls when the answer is long (Tab moves between panels, arrows / PgUp / PgDn / the wheel
scroll). The footer shows the keys that work now:

- comparison: a (A better), b (B better), t (tie), s (skip)
- best/worst: 1-N the best, then 1-N the worst; after the best, e writes a better answer in
  $EDITOR (VISUAL, else vi), shown back to keep (y), edit again (e) or drop (n)
- ranking: 1-N best first (the last is implied)
- everywhere: t all equal, s skip, u undo (a pick on this screen, else the previous answer),
  q quit (Ctrl-C too)

Every answer is journalled by the session the moment it is given; the app returns "done" or
"quit", and `label` says what was kept.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile

from rich.text import Text
from textual.app import App, ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from alignctl.labelling.core import Answered, BadAnswer, Question, Session, View

CSS = """
#title { height: 1; background: $primary; color: $text; padding: 0 1; text-style: bold; }
#prompt { border: round $secondary; border-title-align: left; height: auto; max-height: 35%; }
#answers { height: 1fr; }
#pair { height: 1fr; }
#pair .answer { width: 1fr; height: 1fr; }
.answer { border: round $success; border-title-align: left; height: auto; max-height: 14; padding: 0 1; }
.answer:focus { border: double $accent; }
.picked { border: round $warning; }
#hint { height: auto; padding: 0 1; background: $boost; }
ConfirmWritten { align: center middle; }
#written { width: 90%; height: 80%; border: double $warning; border-title-align: left; padding: 0 1; }
"""


def run_editor(initial: str) -> str:
    """$VISUAL / $EDITOR (else vi) on a temporary file holding `initial`; returns what was saved.
    OSError if the editor cannot be started."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write(initial)
    try:
        subprocess.run([*shlex.split(editor), f.name], check=False)
        with open(f.name, encoding="utf-8") as fh:
            return fh.read().strip("\n")
    finally:
        os.unlink(f.name)


def _panel(text: str, title: str, *classes: str) -> VerticalScroll:
    body = Static(Text(text) if text else Text("(empty)", style="dim"))  # Text: never read as markup
    box = VerticalScroll(body, classes=" ".join(("answer", *classes)))
    box.border_title = title
    return box


class ConfirmWritten(ModalScreen[str]):
    """The answer the person wrote, shown back: keep it (y), edit again (e) or drop it (n)."""

    BINDINGS = [
        Binding("y", "dismiss('keep')", "keep it"),
        Binding("e", "dismiss('edit')", "edit again"),
        Binding("n", "dismiss('drop')", "drop it"),
    ]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        box = VerticalScroll(Static(Text(self.text)), id="written")
        box.border_title = "your answer (the chosen side instead of the best)"
        yield box
        yield Footer()


class LabelApp(App[str]):
    """One session's questions, one screen each; exits with "done" or "quit"."""

    CSS = CSS
    TITLE = "alignctl label"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("a", "compare('a')", "A better"),
        Binding("b", "compare('b')", "B better"),
        Binding("t", "compare('t')", "tie"),
        *(Binding(str(k), f"pick({k})", show=False) for k in range(1, 10)),
        Binding("e", "write", "write a better answer"),
        Binding("t", "equal", "all equal"),
        Binding("s", "skip", "skip"),
        Binding("u", "undo", "undo"),
        Binding("tab", "app.focus_next", "next panel", show=False),
        Binding("q", "stop", "quit"),
        Binding("ctrl+c", "stop", "quit", show=False, priority=True),
    ]

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.question: Question | None = None
        self.shown: View | None = None
        self.picked: list[int] = []
        self.text: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        prompt = VerticalScroll(Static(id="prompt-text"), id="prompt")
        prompt.border_title = "prompt"
        yield prompt
        yield VerticalScroll(id="answers")
        yield Static(id="hint")
        yield Footer()

    async def on_mount(self) -> None:
        await self.show_next()

    # ----------------------------------------------------------------------------- drawing

    async def show_next(self) -> None:
        self.question = self.session.next()
        if self.question is None:
            self.exit("done")
            return
        self.shown = self.session.view(self.question)
        self.picked, self.text = [], None
        self.query_one("#title", Static).update(Text(self.shown.title))
        self.query_one("#prompt-text", Static).update(Text(self.shown.prompt))
        self.query_one("#prompt", VerticalScroll).scroll_home(animate=False)
        await self.redraw_answers()

    async def redraw_answers(self) -> None:
        view = self.shown
        box = self.query_one("#answers", VerticalScroll)
        await box.remove_children()
        if view.question.pair:
            await box.mount(Horizontal(_panel(view.answers[0], "A"), _panel(view.answers[1], "B"), id="pair"))
        else:
            names = ["best", "worst"] if view.question.mode == "best-worst" else [f"#{k + 1}" for k in range(9)]
            marks = dict(zip(self.picked, names, strict=False))
            panels = []
            for n, text in enumerate(view.answers):
                title = f"{n + 1} ({marks[n]})" if n in marks else f"{n + 1}"
                panels.append(_panel(text, title, *(["picked"] if n in marks else [])))
            await box.mount_all(panels)
        self.query_one("#hint", Static).update(self.hint())
        self.refresh_bindings()

    def hint(self) -> Text:
        view, n = self.shown, len(self.shown.answers)
        if view.question.pair:
            step = "which answer is better?"
        elif view.question.mode == "best-worst":
            step = f"press 1-{n}: the best" if not self.picked else f"press 1-{n}: the worst"
        else:
            step = f"press 1-{n}: number {len(self.picked) + 1} (best first)"
        out = Text(step, style="bold")
        if self.text is not None:
            out.append("   your written answer is kept as the chosen side", style="yellow")
        out.append("   Tab: next panel, arrows / PgUp / PgDn: scroll it", style="dim")
        return out

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Which keys work on this screen (the footer shows those)."""
        q = self.question
        if q is None or action in ("stop", "undo", "skip", "focus_next"):
            return True
        if action == "compare":
            return q.pair is not None
        if action == "equal":
            return q.pair is None
        if action == "pick":
            return q.pair is None and 1 <= parameters[0] <= len(self.shown.answers)
        if action == "write":
            return q.mode == "best-worst" and len(self.picked) == 1 and self.text is None
        return True

    # ----------------------------------------------------------------------------- answering

    async def answer(self, **kwargs) -> None:
        try:
            if "key" in kwargs:
                self.session.compare(self.question, kwargs["key"])
            else:
                self.session.rank(self.question, **kwargs)
        except (BadAnswer, Answered) as exc:
            self.notify(str(exc), severity="warning")
            return
        await self.show_next()

    async def action_compare(self, key: str) -> None:
        await self.answer(key=key)

    async def action_equal(self) -> None:
        await self.answer(order=[])

    async def action_skip(self) -> None:
        await self.answer(key="s") if self.question.pair else await self.answer(skip=True)

    async def action_pick(self, number: int) -> None:
        k = number - 1
        if k in self.picked:
            return
        self.picked.append(k)
        n, mode = len(self.shown.answers), self.question.mode
        if mode == "best-worst" and len(self.picked) == 2:
            await self.answer(order=self.picked, text=self.text)
        elif mode == "rank" and len(self.picked) == n - 1:
            await self.answer(order=[*self.picked, *(i for i in range(n) if i not in self.picked)])
        else:
            await self.redraw_answers()

    async def action_undo(self) -> None:
        if self.text is not None:
            self.text = None
        elif self.picked:
            self.picked.pop()
        elif self.session.undo() is None:
            self.notify("nothing to undo")
            return
        else:
            await self.show_next()
            return
        await self.redraw_answers()

    def action_stop(self) -> None:
        self.exit("quit")

    def action_write(self) -> None:
        self.write(self.shown.answers[self.picked[0]])

    def write(self, start: str) -> None:
        """$EDITOR on `start`, then the text shown back to keep, edit again or drop."""
        best = self.shown.answers[self.picked[0]]
        try:
            try:
                with self.suspend():
                    text = run_editor(start)
            except SuspendNotSupported:  # headless (tests): the editor needs no terminal
                text = run_editor(start)
        except OSError as exc:
            self.notify(f"cannot run the editor: {exc} (set $EDITOR)", severity="error")
            return
        if not text.strip() or text == best.strip("\n"):
            self.notify("unchanged: no answer written")
            return

        async def decided(choice: str | None) -> None:
            if choice == "keep":
                self.text = text
                await self.redraw_answers()
            elif choice == "edit":
                self.write(text)

        self.push_screen(ConfirmWritten(text), decided)


def label_in_terminal(session: Session) -> str:
    """Run the app until every question is answered ("done") or the person quits ("quit")."""
    from alignctl.errors import AlignctlError

    app = LabelApp(session)
    result = app.run()
    if app.return_code:
        raise AlignctlError(f"the labelling screen stopped with an error; answers so far are in {session.journal.path}")
    return result or "quit"
