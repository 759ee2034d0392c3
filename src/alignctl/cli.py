"""The root Typer app: every stage from the registry, then the tools; errors shown as one red line.

Commands load lazily: `alignctl --help` lists each command with the first paragraph of its
module's docstring, read from the source file without importing the module, and a command's module
is imported only when that command runs, asks for its help or is completed. No module imports
torch/transformers/trl at import time (ruff TID253), so `alignctl STAGE --help` stays fast too.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
import typer.main
from rich.markup import escape

from alignctl import __version__, stages
from alignctl.console import console
from alignctl.errors import AlignctlError

# commands that are not stages: name -> module in alignctl.tools (its `command`, or its Typer `app`)
TOOLS = {"report": "report", "validate": "validate", "presets": "presets"}


# Two changes to typer's help screens, for every command. typer 0.2x shows Python's annotations as
# the type (`<bool>` on a flag, `<list[str]>`): words instead, none for a flag. And rich narrows
# every column of the options table alike, so at 80 columns a long option name was cut with the
# help beside it (`--local-rollout-forward-batch…`): only the help column wraps now, and folds a
# word too long for it.
TYPE_WORDS = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}


def _type_label(param: Any, ctx: Any = None) -> str | None:
    if getattr(param, "is_flag", False):
        return None
    if getattr(param, "name", "") == "set_":
        return "KEY=VALUE"
    desc = param.type_descriptor
    if desc.is_path:
        return "PATH"
    tp = desc.annotation
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    inner = typing.get_args(args[0]) if typing.get_origin(args[0]) is list else args
    return TYPE_WORDS.get(inner[0], "TEXT") if inner else "TEXT"


def _help_table() -> type:
    from rich.table import Table
    from rich.text import Text

    class HelpTable(Table):
        def add_row(self, *renderables: Any, **kwargs: Any) -> None:
            super().add_row(*renderables, **kwargs)
            for column in self.columns[:-1]:
                column.no_wrap = True
            for item in getattr(renderables[-1], "renderables", renderables[-1:]) if renderables else ():
                if isinstance(item, Text):  # a long word (a URL) in the help folds rather than being cut
                    item.overflow = "fold"

    return HelpTable


def _readable(cls: type) -> None:
    original = cls.format_help

    def format_help(self, ctx, formatter):
        import typer.rich_utils  # typer imports it only to show help; so do we

        if typer.rich_utils.Table.__name__ != "HelpTable":
            typer.rich_utils.Table = _help_table()
        return original(self, ctx, formatter)

    cls.format_help = format_help


typer.core._TyperParameter.display_type = _type_label
for _cls in (typer.core.TyperCommand, typer.core.TyperGroup):
    _readable(_cls)


def doc_summary(module: str) -> str:
    """The first paragraph of a module's docstring, read from its source without importing it.

    Every command module opens with its docstring, so the text up to the first blank line (or the
    closing quotes) is the summary; parsing the whole file would cost more than the help itself.
    """
    text = Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8")
    if not text.startswith('"""'):
        raise RuntimeError(f"{module}: a command module must open with its docstring")
    head = text[3:].split('"""', 1)[0]
    return " ".join(head.split("\n\n", 1)[0].split())


def _stage_command(name: str) -> typer.core.TyperCommand:
    from alignctl import flags

    stage = stages.get(name)
    module = stages.load(name)
    sub = typer.Typer(add_completion=False)
    sub.command(name, help=module.__doc__.split("\n\n")[0])(flags.build(stage, module))
    return typer.main.get_command(sub)


def _tool_command(name: str):
    module = importlib.import_module(f"alignctl.tools.{TOOLS[name]}")
    if hasattr(module, "app"):
        command = typer.main.get_command(module.app)
        command.name = name
        return command
    sub = typer.Typer(add_completion=False)
    sub.command(name, help=module.__doc__.split("\n\n")[0])(module.command)
    return typer.main.get_command(sub)


class LazyCommand(typer.core.TyperCommand):
    """Stands in a command list with its name and help; anything else builds the real command."""

    def __init__(self, name: str, help: str, build: Callable[[], Any]) -> None:
        super().__init__(name=name, help=help, short_help=help)
        self._build = build
        self._real = None

    @property
    def real(self):
        if self._real is None:
            self._real = self._build()
            self._real.name = self.name
        return self._real

    def make_context(self, info_name, args, parent=None, **extra):
        return self.real.make_context(info_name, args, parent=parent, **extra)


class LazyGroup(typer.core.TyperGroup):
    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for stage in stages.REGISTRY:
            summary = doc_summary(stage.module)
            self.add_command(LazyCommand(stage.name, summary, lambda n=stage.name: _stage_command(n)))
        for name, module in TOOLS.items():
            summary = doc_summary(f"alignctl.tools.{module}")
            self.add_command(LazyCommand(name, summary, lambda n=name: _tool_command(n)))


def commands() -> dict[str, Any]:
    """Every command, built (each stage module imported): for docs generation and tests."""
    group = typer.main.get_command(app)
    return {name: getattr(cmd, "real", cmd) for name, cmd in group.commands.items()}


app = typer.Typer(
    name="alignctl",
    cls=LazyGroup,
    help="The LLM alignment pipeline, one subcommand per stage: "
    + ", ".join(stages.names())
    + ". Stages read and write JSONL files and model dirs, so they chain in shell scripts and Makefiles.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        print(f"alignctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks on errors, and the engines' own logs (vLLM INFO).")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug or bool(os.environ.get("ALIGNCTL_DEBUG"))
    if _state["debug"]:  # read where an engine is loaded (generation/vllm.py) and by child processes
        os.environ["ALIGNCTL_DEBUG"] = "1"
    else:  # vLLM reads it when first imported, which TRL's config classes already do (settings checks);
        # what it logs before its own logging is set up reaches the "vllm" logger's level only
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        logging.getLogger("vllm").setLevel(logging.ERROR)


def main() -> None:
    from alignctl.models import trl_vllm_warning_to_log
    from alignctl.runs import close_process_group, discard_unused, is_main_process

    trl_vllm_warning_to_log()  # before anything imports TRL (the settings' domain checks read its configs)

    # under torchrun / accelerate launch every rank runs this; only rank 0 talks (stdout carries the
    # output path once) and other ranks speak up only to report their own errors
    rank = "" if is_main_process() else f"[rank {os.environ.get('RANK', '?')}] "
    if rank:
        sys.stdout = open(os.devnull, "w")  # left open: it lives as long as the process
        console.quiet = True
    try:
        try:
            app()
        finally:  # every rank of a distributed run, whatever happened
            close_process_group()
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
