"""One rich Console on stderr for progress, tables and warnings; stdout stays for data and paths."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)  # one message, one line (grep-able)


def info(message: str) -> None:
    console.print(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {message}")


def note(message: str) -> None:
    """A one-line notice of a setting alignctl changed for the user (never silently)."""
    console.print(f"[cyan]note:[/] {message}")
