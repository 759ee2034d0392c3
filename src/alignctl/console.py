"""One rich Console on stderr for progress, tables and warnings; stdout stays for data and paths."""

from __future__ import annotations

import contextlib
import os

from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)  # one message, one line (grep-able)


def info(message: str) -> None:
    console.print(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {message}")


def note(message: str) -> None:
    """A one-line notice of a setting alignctl changed for the user (never silently)."""
    console.print(f"[cyan]note:[/] {message}")


@contextlib.contextmanager
def status(text: str | None):
    """A rich spinner over a step that a library reports with its own tqdm bar, which goes quiet.

    `text=None`: nothing to show. Used for DPO's reference log-prob precompute and the one-time
    GGUF conversion of the embedded model. On ranks other than 0 the console is quiet (cli.main).
    """
    if not text:
        yield
        return
    # read at call time by TRL's bars (`disable=bool(os.environ.get("TQDM_DISABLE"))`); tqdm itself
    # reads TQDM_* only when first imported, so import the library before entering
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with console.status(text):
            yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before
