"""Presets and configuration: load, merge, validate, and remember where every value came from.

Precedence (docs/design.md, "Presets"): built-in defaults < `--preset NAME|PATH` < `--config FILE` <
`--set key=value` < explicit flags. The default preset of a stage is the file named after it in
`presets/` (the chapter's values). Field names are TRL's config names. Unknown keys are errors
with a suggestion; every value's source is kept so `presets show` and `alignctl.json` can say it.

A stage backed by a TRL trainer also takes any other field of that trainer's config: its module's
`TRAINER` declares the trainer (`training.trainers.TRLTrainer`), and `TRAINER.settable()` gives
the config's fields with TRL's own type hints and the ones alignctl sets itself. trl is imported
for that only when such a key is given, so the usual path stays light.

This module knows no stage and no TRL module: `resolve` receives a stage module from the registry
(`alignctl.stages.resolve(name, ...)` is the usual door) and reads its `NAME`, `Settings` and
optional `TRAINER`, which it asks and never imports.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alignctl import domains, recipes
from alignctl.domains import coerce
from alignctl.errors import InputError
from alignctl.files import read_text


def presets_dir() -> Path:
    """`presets/` inside the installed package (wheel), else at the repo root (editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "presets", here.parent.parent / "presets"):
        if candidate.is_dir():
            return candidate
    return here / "presets"


@dataclass
class Resolved:
    """A stage's resolved settings: values plus the source of each one."""

    stage: str
    preset: str
    values: dict[str, Any]
    sources: dict[str, str]
    help: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, tuple[Any, str]] = field(default_factory=dict)  # from a --config recipe: recipes.py

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def override(self, key: str, value: Any, source: str) -> None:
        self.values[key] = value
        self.sources[key] = source

    def manifest(self) -> dict[str, dict[str, Any]]:
        return {k: {"value": self.values[k], "source": self.sources[k]} for k in self.values}


# ---------------------------------------------------------------------------------------------
# Types


def suggest(key: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


@functools.cache
def schema(stage: Any) -> dict[str, dataclasses.Field]:
    """The fields of a stage's Settings, with their types resolved."""
    cls = stage.Settings
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, f in fields.items():
        f.type = hints[name]
    return fields


# credentials a TRL config would take as a setting, and where they belong instead: a setting's
# value is written into the run's manifest (its config and its command line)
CREDENTIALS = {"hub_token": "HF_TOKEN"}


def defaults(stage: Any) -> dict[str, Any]:
    out = {}
    for name, f in schema(stage).items():
        if f.default is not dataclasses.MISSING:
            out[name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[name] = f.default_factory()
    return out


# ---------------------------------------------------------------------------------------------
# Files


def _read_yaml(path: Path, what: str) -> dict:
    text = read_text(path, what)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise InputError(f"{path}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise InputError(f"{path}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a tagged value yaml cannot build (!!timestamp 2001-02-30)
        raise InputError(f"{path}: invalid YAML value: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} must be a mapping of key: value")
    return data


def _key_lines(path: Path) -> dict[str, int]:
    """The line of each top-level key, and of each key under `values:`: errors name file:line."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return {}  # _read_yaml has reported (or will report) the file itself
    lines: dict[str, int] = {}
    pairs = list(node.value) if isinstance(node, yaml.MappingNode) else []
    for key, value in pairs:
        lines[str(key.value)] = key.start_mark.line + 1
        if key.value == "values" and isinstance(value, yaml.MappingNode):
            pairs.extend(value.value)
    return lines


def find_preset(name_or_path: str) -> Path:
    """A preset's YAML file: a file path, or the name of a shipped preset. A directory is never a
    preset, so `--preset dpo` still means the preset after `alignctl dpo -o dpo` made a dir `dpo`."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise InputError(f"--preset {name_or_path}: file not found")
        return p
    candidate = presets_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise InputError(f"--preset {name_or_path}: no such preset{suggest(name_or_path, list_presets())}")


domains.find_preset = find_preset  # the "a preset" domain (domains.py sits below config)


def list_presets() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def load_preset(name_or_path: str, stage: str | None = None, _seen: tuple[str, ...] = ()) -> tuple[dict, dict, dict]:
    """(values, sources, meta) of a preset, following `extends:`."""
    path = find_preset(name_or_path)
    data = _read_yaml(path, "preset")
    label = path.stem if path.parent == presets_dir() else str(path)
    if "values" in data and isinstance(data["values"], dict):
        values = {str(k): v for k, v in data["values"].items()}
        notes = data.get("sources") or {}
        meta = {k: v for k, v in data.items() if k not in ("values", "sources")}
    else:  # a flat mapping, like a --config file
        values, notes, meta = {str(k): v for k, v in data.items()}, {}, {}
    if not isinstance(notes, dict):
        raise InputError(f"{path}: sources must be a mapping of key: where the value comes from")
    deps = meta.get("departures", {})
    entry_ok = lambda d: d is None or (isinstance(d, dict) and {"chapter", "why"} <= d.keys())  # noqa: E731
    if not isinstance(deps, dict) or not all(map(entry_ok, deps.values())):
        raise InputError(f"{path}: departures must map each key to {{chapter: value, why: reason}} (or null)")
    if "extends" in meta and not isinstance(meta["extends"], str):
        raise InputError(f"{path}: extends must be the name or path of one preset")
    if stage and meta.get("stage") and meta["stage"] != stage:
        raise InputError(f"--preset {name_or_path}: it is a preset for {meta['stage']!r}, not {stage!r}")
    base_values: dict = {}
    base_sources: dict = {}
    if parent := meta.get("extends"):
        if parent in _seen:
            raise InputError(f"{path}: preset extends itself through {parent!r}")
        base_values, base_sources, _ = load_preset(parent, stage, (*_seen, label))
    sources = dict(base_sources)
    for k in values:
        sources[k] = f"preset {label}" + (f": {notes[k]}" if k in notes else "")
    return {**base_values, **values}, sources, meta


def parse_set(items: list[str] | None) -> list[tuple[str, Any, str]]:
    """`--set key=value` items, values parsed as YAML scalars (so 1e-5, true, [a, b] work)."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--set {item}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError):
            value = raw  # not YAML (or a tag yaml cannot build): the plain string, checked by type below
        if isinstance(value, str) and _looks_numeric(raw):
            value = float(raw)
        out.append((key, value, f"--set {item}"))
    return out


def _looks_numeric(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Resolution


def resolve(
    stage: Any,
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    sets: list[str] | None = None,
    flags: dict[str, tuple[Any, str]] | None = None,
) -> Resolved:
    """Merge every layer for `stage` (a stage module: `NAME`, `Settings`, optional `TRAINER`);
    raises InputError on unknown keys or ill-typed values."""
    name = stage.NAME
    fields = schema(stage)
    values = defaults(stage)
    sources = {k: "default" for k in values}
    known = fields.keys()
    extra_help: dict[str, str] = {}
    wheres: dict[str, str] = {}  # key -> where a user layer set it (domains.check names it)

    def apply(key: str, value: Any, source: str, where: str, user: bool = True) -> None:
        # an unknown or credential key's value is never echoed: it may be a secret under any name
        bare = f"--set {key}" if where.startswith("--set ") else where
        if key in CREDENTIALS:
            raise InputError(f"{bare}: {key} is a credential, never a setting: set ${CREDENTIALS[key]} instead")
        if key in fields:
            tp = fields[key].type
        else:
            trainer = getattr(stage, "TRAINER", None)  # the stage's TRL trainer declaration, asked, never imported
            cls_name, trl, managed = trainer.settable() if trainer is not None else ("", {}, {})
            if key in managed:
                raise InputError(f"{where}: {key} is set by alignctl; {managed[key]}")
            if key not in trl:
                hint = suggest(key, [*known, *trl])
                if not hint:
                    hint = f" (neither an alignctl setting nor a {cls_name} field)" if cls_name else ""
                raise InputError(f"{bare}: unknown key {key!r} for {name}{hint}")
            tp = trl[key]
            extra_help[key] = f"TRL {cls_name} field"
        values[key] = coerce(key, value, tp, where)
        sources[key] = source
        if user:
            wheres[key] = where
        else:
            wheres.pop(key, None)

    preset_name = preset or (name if (presets_dir() / f"{name}.yaml").is_file() else "")
    if preset_name:
        p_values, p_sources, _ = load_preset(preset_name, name)
        where = f"--preset {preset_name}" if preset else f"preset {preset_name}"
        shipped = find_preset(preset_name).parent == presets_dir()  # checked by the tests instead
        for k, v in p_values.items():
            apply(k, v, p_sources[k], where, user=not shipped)
    inputs: dict[str, tuple[Any, str]] = {}
    if config_file:
        data = _read_yaml(Path(config_file), "config")
        if "values" in data and isinstance(data["values"], dict):
            data = data["values"]
        inputs = recipes.apply(Path(config_file), data, _key_lines(Path(config_file)), apply)
    for k, v, src in parse_set(sets):
        apply(k, v, src, src)
    for k, (v, flag) in (flags or {}).items():
        if v is not None:
            apply(k, v, f"flag {flag}", flag)
    domains.check(stage, values, wheres, fields)
    check_report_to(values.get("report_to"), sources.get("report_to", ""))
    helps = {k: f.metadata.get("help", "") for k, f in fields.items()} | extra_help
    return Resolved(stage=name, preset=preset_name, values=values, sources=sources, help=helps, inputs=inputs)


# --report-to destinations that need a package alignctl does not install by default: package, extra
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


def check_report_to(value: Any, source: str) -> None:
    """A tracker whose package is missing is one line before any model loads (not a traceback from
    inside the trainer after it has loaded)."""
    import importlib.util

    for name in str(value or "").replace(" ", "").split(","):
        if name in TRACKERS and importlib.util.find_spec(TRACKERS[name][0]) is None:
            package, extra = TRACKERS[name]
            hint = f"pip install {package} (or pip install 'alignctl[{extra}]')"
            raise InputError(f"{source or 'report_to'}: {name} is not installed: {hint}")


def adjust_for_device(resolved: Resolved, *, cuda: bool) -> None:
    """Turn off bf16 where it cannot run, with one printed line (never silently). (vLLM: the
    `backend` setting, chosen in training/engine_hooks.py.)"""
    from alignctl.console import note

    if not cuda and resolved.get("bf16"):
        resolved.override("bf16", False, "auto: no CUDA device")
        note(f"no CUDA device: bf16 off, training in fp32 ({resolved.stage} asked for bf16)")
