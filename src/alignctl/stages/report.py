"""Plot training metrics of one or more runs and write a summary page.

    alignctl report runs/dpo-b0.1 runs/dpo-b0.3 -o report/

One PNG per logged metric (one line per run), per-round eval plots for `iterate` runs,
`index.md` / `index.html` and `series.json` in the output dir; prints the path of `index.md`.
The work lives in `alignctl.report`; matplotlib is imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_DIR", help="Run directories (a stage's output dir, or an iterate run).", show_default=False
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the PNGs and index.")] = Path("report"),
) -> None:
    """Plot training metrics of one or more runs and write a summary page."""
    from alignctl.report import run_report

    typer.echo(str(run_report(run_dirs, output)))


def register(app: typer.Typer) -> None:
    """Add the `report` command to the root app."""
    app.command("report", help=__doc__.split("\n\n")[0])(command)
