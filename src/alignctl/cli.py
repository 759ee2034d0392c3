"""The root Typer app: one thin command per stage, errors shown as one red line.

Only light modules are imported here; each command imports torch/transformers/trl inside its
function, so `alignctl --help` and `alignctl STAGE --help` stay fast (a test checks this).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from alignctl import __version__
from alignctl.console import console
from alignctl.errors import AlignctlError

app = typer.Typer(
    name="alignctl",
    help="The LLM alignment pipeline, one subcommand per stage: collect, label, train-rm, dpo, grpo, "
    "online-dpo, ppo, iterate. Stages read and write JSONL files and model dirs, so they chain in "
    "shell scripts and Makefiles.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        print(f"alignctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug or bool(os.environ.get("ALIGNCTL_DEBUG"))


def _register() -> None:
    from alignctl.commands import presets, validate
    from alignctl.stages import collect, dpo, grpo, iterate, label, online_dpo, ppo, report, train_rm
    from alignctl.stages import eval as eval_stage

    app.command("train-rm", help=train_rm.__doc__.split("\n\n")[0])(train_rm.command)
    app.command("collect", help=collect.__doc__.split("\n\n")[0])(collect.command)
    app.command("label", help=label.__doc__.split("\n\n")[0])(label.command)
    app.command("dpo", help=dpo.__doc__.split("\n\n")[0])(dpo.command)
    app.command("grpo", help=grpo.__doc__.split("\n\n")[0])(grpo.command)
    app.command("online-dpo", help=online_dpo.__doc__.split("\n\n")[0])(online_dpo.command)
    app.command("ppo", help=ppo.__doc__.split("\n\n")[0])(ppo.command)
    app.command("iterate", help=iterate.__doc__.split("\n\n")[0])(iterate.command)
    app.command("eval", help=eval_stage.__doc__.split("\n\n")[0])(eval_stage.command)
    report.register(app)
    app.add_typer(presets.app, name="presets")
    app.command("validate", help=validate.__doc__.split("\n\n")[0])(validate.command)


_register()


def main() -> None:
    from alignctl.runs import discard_unused, is_main_process

    # under torchrun / accelerate launch every rank runs this; only rank 0 talks (stdout carries the
    # output path once) and other ranks speak up only to report their own errors
    rank = "" if is_main_process() else f"[rank {os.environ.get('RANK', '?')}] "
    if rank:
        sys.stdout = open(os.devnull, "w")  # left open: it lives as long as the process
        console.quiet = True
    try:
        app()
    except AlignctlError as exc:
        discard_unused()
        console.quiet = False
        if _state["debug"]:
            console.print_exception()
        console.print(f"[bold red]error:[/] {rank}{escape(str(exc))}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        discard_unused()
        console.quiet = False
        console.print(f"[bold red]interrupted[/] {rank}".rstrip())
        sys.exit(130)
    except Exception as exc:  # a bug: one line unless --debug
        discard_unused()
        console.quiet = False
        if _state["debug"]:
            raise
        console.print(
            f"[bold red]error:[/] {rank}internal error: {type(exc).__name__}: {escape(str(exc))} (rerun with --debug)",
            soft_wrap=True,
        )
        sys.exit(1)
