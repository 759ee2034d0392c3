"""A person as a pairwise reward source: the chapter's "由人工挑选出好的和差的答案".

`label --by human` asks one person at the terminal (the Textual app in `labelling/terminal.py`)
or, with `--serve`, several people at a local web page (`labelling/web.py`). The questions, the
journal, undo and resume are one core (`labelling/core.py`); this class is what the reward-source
protocol needs: `kind`, `pairwise`, `describe()`, and the check that a terminal is there.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from alignctl.errors import InputError


class HumanSource:
    """Pairwise source answered by people (label drives the faces; a judge's `decide` is not here)."""

    pairwise = True
    kind = "human"

    def check_terminal(self) -> None:
        if not (os.isatty(sys.__stdin__.fileno()) and os.isatty(sys.__stderr__.fileno())):  # Textual draws on stderr
            raise InputError(
                "--by human needs an interactive terminal (stdin or stderr is not a TTY); "
                "--serve labels in a web page instead"
            )

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}
