"""Command-line options derived from a stage's Settings: one name per setting, defined once.

A Settings field made with `settings.setting(default, help, flag=True)` is also an option (`beta` ->
`--beta`; `flag="--epochs"` or `("--num-samples", "-n")` to name it otherwise). The options every
stage takes (`ALWAYS`) and every training stage takes (`TRAINING`) are defined here once; those
that set a setting (`--epochs` -> `num_train_epochs`) are resolved with the stage's own flags.
`build(stage, module)` turns a stage's `command(<inputs>, *, resolved, opts)` into the Typer
callback: its signature is the stage's inputs + its settings' flags + the common options, so
`--help` and shell completion show all of them, and nothing imports torch.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from alignctl.rewards.trl_adapters import REWARD_HELP

COMMON_PANEL = "Common options"
TRAINING_PANEL = "Common training options"


@dataclass(frozen=True)
class Common:
    """An option shared by stages. `key`: the setting it sets; None: a run switch (see `Opts`)."""

    param: str
    decls: tuple[str, ...]
    type: Any
    help: str
    key: str | None = None
    default: Any = None


# Inputs several stages take, defined once with one help text (a stage's `command` lists them as parameters)
Prompts = Annotated[
    Path,
    typer.Option(
        "--prompts",
        "-p",
        help="Prompts {prompt: text or messages}, other columns (e.g. answer) kept for the rewards: "
        "JSONL, Parquet, JSON array, dataset dir, hub id (--split).",
    ),
]
Rewards = Annotated[
    list[str] | None,
    typer.Option("--reward", "-r", help=f"Reward source, repeatable (weights: --reward-weights): {REWARD_HELP}."),
]
By = Annotated[
    str,
    typer.Option(
        "--by",
        help="Who judges the answers: rm:PATH (reward model), rule:NAME, rule:file.py:func, judge:MODEL or human.",
    ),
]
Strict = Annotated[
    bool, typer.Option("--strict", help="Reject prompts over max_prompt_length instead of truncating them.")
]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Policy model: a HF model dir, a hub id, or the alias smollm2-135m (default)."),
]
PrefsData = Annotated[
    Path,
    typer.Option(
        "--data",
        "-d",
        help="Preference pairs (any of the three shapes): JSONL, Parquet, JSON array, dataset dir, hub id.",
    ),
]
JudgeUrl = Annotated[
    str | None,
    typer.Option("--judge-url", help="A judge behind an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1."),
]
JudgeModel = Annotated[str | None, typer.Option("--judge-model", help="The endpoint's model name (with --judge-url).")]
JudgeKeyEnv = Annotated[
    str, typer.Option("--judge-key-env", help="Environment variable holding the endpoint's API key.")
]
JudgeTemplate = Annotated[
    Path | None,
    typer.Option(
        "--judge-template",
        help="Judge prompt: neutral (default), concise, or a file with {prompt} {answer_a} {answer_b}.",
    ),
]

ALWAYS = (
    Common(
        "preset",
        ("--preset",),
        str | None,
        "Preset name (alignctl presets list) or YAML file. Default: the stage's own.",
    ),
    Common("config_file", ("--config",), Path | None, "YAML file of key: value settings (TRL names)."),
    Common("set_", ("--set",), list[str] | None, "Override one setting: --set key=value (repeatable)."),
    Common("overwrite", ("--overwrite",), bool, "Replace an existing output.", default=False),
    Common("force", ("--force",), bool, "Redo the work even if the output is up to date.", default=False),
    Common(
        "trust_remote_code",
        ("--trust-remote-code",),
        bool,
        "Allow model repos' own Python code (off by default).",
        default=False,
    ),
)
TRAINING = (
    Common(
        "model",
        ("--model", "-m"),
        str | None,
        "Policy model: a HF model dir, a hub id, or the alias smollm2-135m (default).",
    ),
    Common(
        "output",
        ("--output", "-o"),
        Path | None,
        "Output dir (default: runs/<stage>). Never overwritten without --overwrite.",
    ),
    Common("seed", ("--seed",), int | None, "Random seed.", key="seed"),
    Common("max_steps", ("--max-steps",), int | None, "Stop after this many optimizer steps.", key="max_steps"),
    Common(
        "max_minutes",
        ("--max-minutes",),
        float | None,
        "Stop at the end of the first optimizer step at which this many minutes of training have passed "
        "(from the first step: loading not counted), then save as usual; with --max-steps, whichever comes "
        "first. The steps done then depend on the machine's speed.",
        key="max_minutes",
    ),
    Common("epochs", ("--epochs",), float | None, "num_train_epochs.", key="num_train_epochs"),
    Common("learning_rate", ("--learning-rate", "--lr"), float | None, "learning_rate.", key="learning_rate"),
    Common(
        "batch_size", ("--batch-size",), int | None, "per_device_train_batch_size.", key="per_device_train_batch_size"
    ),
    Common("resume", ("--resume",), bool, "Continue from the last checkpoint of an interrupted run.", default=False),
    Common("no_merge", ("--no-merge",), bool, "Save the LoRA adapter instead of merging it.", default=False),
    Common("report_to", ("--report-to",), str | None, "Also log to: none, tensorboard, wandb, ...", key="report_to"),
)
TRAINING_KEYS = tuple(c.key for c in TRAINING if c.key)
# an input, not a setting: stages that read --data / --prompts / --candidates take it in `command`
Split = Annotated[
    str | None,
    typer.Option("--split", help="With a dataset dir or a hub dataset id as input: the split to read (train, ...)."),
]


@dataclass
class Opts:
    """The run switches of a command (common options that are not settings)."""

    model: str | None = None
    output: Path | None = None
    overwrite: bool = False
    force: bool = False
    resume: bool = False
    no_merge: bool = False
    trust_remote_code: bool = False

    def file_switches(self) -> dict[str, bool]:
        """The keyword arguments of `run()` for a stage that writes a file (collect, label, eval)."""
        return {"overwrite": self.overwrite, "force": self.force, "trust_remote_code": self.trust_remote_code}

    def switches(self) -> dict[str, bool]:
        """The keyword arguments every training stage's `run()` takes."""
        return {
            "overwrite": self.overwrite,
            "force": self.force,
            "resume": self.resume,
            "merge": not self.no_merge,
            "trust_remote_code": self.trust_remote_code,
        }


@dataclass(frozen=True)
class SettingFlag:
    key: str
    decls: tuple[str, ...]
    type: Any
    help: str
    panel: str | None


def setting_flags(settings_cls: type) -> list[SettingFlag]:
    """The options a Settings class declares (fields with `flag`), typed from the field."""
    hints = typing.get_type_hints(settings_cls)
    out = []
    for f in dataclasses.fields(settings_cls):
        flag = f.metadata.get("flag")
        if not flag:
            continue
        decls = (flag,) if isinstance(flag, str) else tuple(flag) if isinstance(flag, tuple) else ()
        base = _option_type(hints[f.name])
        if not decls:
            decls = ("--" + f.name.replace("_", "-"),)
        if base is bool and "/" not in decls[0]:
            decls = (f"{decls[0]}/--no-{decls[0][2:]}", *decls[1:])
        out.append(SettingFlag(f.name, decls, base | None, f.metadata.get("help", ""), f.metadata.get("panel")))
    return out


def _option_type(tp: Any) -> Any:
    """The type an option parses: the field's type without None; lists (and other shapes) as text,
    which domains.coerce parses (`--lora-target-modules q_proj,v_proj`, `--reward-weights 1,0.5`)."""
    args = (
        [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) in (typing.Union, type(int | None))
        else [tp]
    )
    base = args[0] if len(args) == 1 else str
    return base if base in (bool, int, float, str, Path) else str


def _param(name: str, tp: Any, decls: tuple[str, ...], help: str, default: Any, panel: str | None) -> inspect.Parameter:
    option = typer.Option(*decls, help=help, rich_help_panel=panel, show_default=default not in (None, False))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[tp, option])


def _flag_label(decls: tuple[str, ...], value: Any) -> str:
    """How a given flag is named in sources ("flag --beta"); for --x/--no-x, the one that was used."""
    first = decls[0]
    if "/" in first:
        on, off = first.split("/", 1)
        return on if value else off
    return first


def _fillable(p: inspect.Parameter) -> inspect.Parameter:
    """A required input (`--data`) made optional for Typer, since a --config recipe may name it
    (`_take_inputs` then says it is missing); its help says so."""
    if p.default is not p.empty or p.name in ("resolved", "opts"):
        return p
    base, *extras = typing.get_args(p.annotation) or (p.annotation,)
    info = next((e for e in extras if hasattr(e, "param_decls")), None)
    if info is None:
        return p
    twin = copy.copy(info)
    twin.help = f"{info.help or ''} [required, or dataset_name in a --config recipe]".strip()
    return p.replace(default=None, annotation=Annotated[base | None, twin])


def _required(command: Callable) -> set[str]:
    return {p.name for p in inspect.signature(command).parameters.values() if p.default is p.empty}


def _take_inputs(resolved, given: dict, opts: Opts, own: list, required: list[str], stage: str) -> None:
    """Inputs a --config recipe names (recipes.py) where the command line gave none; then every
    required input must be there."""
    from alignctl.errors import InputError

    names = {p.name for p in own}
    for name, (value, where) in resolved.inputs.items():
        if name in ("model", "output") and name not in names:  # a training stage's common options
            if getattr(opts, name) is None:
                setattr(opts, name, Path(value) if name == "output" else str(value))
            continue
        target = next((n for n in (("data", "prompts") if name == "data" else (name,)) if n in names), None)
        if target is None or name == "output":
            raise InputError(f"{where}: {stage} takes no {name} input from a recipe")
        if given[target] is None:
            given[target] = Path(value) if target in ("data", "prompts") else value
    for p in own:
        if p.name in required and given[p.name] is None:
            info = next((e for e in typing.get_args(p.annotation)[1:] if hasattr(e, "param_decls")), None)
            decls = [d for d in (info.param_decls if info else ()) if d.startswith("--")]
            flag = decls[0] if decls else "--" + p.name.replace("_", "-")
            raise InputError(f"Missing option '{flag}' (or a --config recipe's dataset_name)")


def build(stage: Any, module: Any) -> Callable[..., None]:
    """The Typer callback of a stage: its inputs, its settings' flags, the common options."""
    from alignctl.console import console  # noqa: F401  (light; keeps the console configured before any output)

    own = [
        _fillable(p)
        for p in inspect.signature(module.command, eval_str=True).parameters.values()
        if p.name not in ("resolved", "opts")
    ]
    required = [p.name for p in own if p.name in _required(module.command)]
    commons = ALWAYS + (TRAINING if stage.training else ())
    flagged = setting_flags(module.Settings)
    if stage.training:  # a training stage's setting shares the common option of the same key
        flagged = [f for f in flagged if f.key not in TRAINING_KEYS]
    params = list(own)
    params += [_param(f.key, f.type, f.decls, f.help, None, f.panel) for f in flagged]
    for c in commons:
        panel = TRAINING_PANEL if c in TRAINING else COMMON_PANEL
        text = getattr(module, "MODEL_HELP", c.help) if c.param == "model" else c.help  # train-rm: not a policy
        params.append(_param(c.param, c.type, c.decls, text, c.default, panel))
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise RuntimeError(f"stage {stage.name}: two options share a parameter name: {sorted(names)}")
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]

    def callback(**given: Any) -> None:
        from alignctl.config import resolve

        layered = {
            f.key: (given[f.key], _flag_label(f.decls, given[f.key])) for f in flagged if given[f.key] is not None
        }
        for c in commons:
            if c.key and given[c.param] is not None:
                layered[c.key] = (given[c.param], c.decls[0])
        resolved = resolve(
            module, preset=given["preset"], config_file=given["config_file"], sets=given["set_"], flags=layered
        )
        opts = Opts(
            **{c.param: given[c.param] for c in commons if c.key is None and c.param in Opts.__dataclass_fields__}
        )
        _take_inputs(resolved, given, opts, own, required, stage.name)
        if stage.training and opts.output is None:
            opts.output = Path("runs") / stage.name
        out = module.command(**{p.name: given[p.name] for p in own}, resolved=resolved, opts=opts)
        if out is not None:
            print(out)

    callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    callback.__annotations__ = {p.name: p.annotation for p in params}
    callback.__name__ = module.command.__name__
    callback.__doc__ = module.command.__doc__
    return callback
