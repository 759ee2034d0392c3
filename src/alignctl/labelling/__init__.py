"""People label candidates: one core, two faces.

- `core.py`: the questions (a comparison of two answers, or one screen per prompt: best/worst or
  a full ranking), one annotator's `Session` (answers journalled as they are given, undo,
  resume), the journal's record format. It knows no screen and no server.
- `terminal.py`: the Textual app of `label --by human` (one person at the terminal).
- `team.py` + `web.py`: `label --by human --serve`, a local page where several people label the
  same candidates, each prompt handed to K of them; `votes.py` turns their journals into pairs
  with votes and agreement (Krippendorff's alpha).

A third face (another UI) is a file that shows `Session.view(question)` and calls
`Session.answer` / `Session.undo`; everything else is shared.
"""

from __future__ import annotations

import importlib.util

from alignctl.errors import InputError

# what `pip install 'alignctl[serve]'` adds (pyproject.toml), by import name
SERVE_PACKAGES = {"starlette": "starlette", "uvicorn": "uvicorn", "jinja2": "jinja2"}


def require_serve() -> None:
    """One line naming what to install when the web page's packages are missing (before any work)."""
    missing = [dist for mod, dist in SERVE_PACKAGES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise InputError(
            f"label --serve needs {', '.join(missing)}: pip install 'alignctl[serve]'",
        )
