"""The one error family alignctl raises on purpose.

`cli.py` catches `AlignctlError` and shows it as one red line on stderr with `exit_code`; anything
else is a bug and shows a traceback only with `--debug`.
"""

from __future__ import annotations


class AlignctlError(Exception):
    """Base class: a message meant for the user, and the process exit code that goes with it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class InputError(AlignctlError):
    """Bad input: a malformed file (`path:line: what`), an unknown preset key, a bad flag value.

    Exit code 2, like a usage error: nothing was computed and nothing was written.
    """

    exit_code = 2


class ModelError(AlignctlError):
    """A model reference that cannot be resolved or loaded (missing dir, no tokenizer, wrong head)."""

    exit_code = 2


class OutputError(AlignctlError):
    """The output path exists (without --overwrite), is not writable, or is in a bad state."""

    exit_code = 2
