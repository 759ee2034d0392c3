"""The stage registry and the stage contract: one list of what exists, one shape for each stage.

A stage is one module here, named after its subcommand (`online-dpo` -> `online_dpo.py`; ppo is a
package), listed once in `REGISTRY`. The module provides:

- `NAME`: the subcommand (equal to its registry name; manifests and messages use it).
- `Settings`: a dataclass of every setting the stage accepts, with TRL's names and built-in
  defaults; a field made with `flags.setting(..., flag=True)` is also a command-line option.
- `run(resolved, <inputs>, ...)`: the work, callable in-process (iterate calls it). It validates
  every input before any model loads.
- `command(<inputs>, *, resolved, opts)`: Typer parameters for the stage's inputs only (files,
  reward sources); settings flags and the common options are added by `flags.build`. It calls
  `run` and returns the output path, which the CLI prints on stdout.
- optional `check(resolved)`: every problem with the settings as one InputError (run calls it;
  iterate calls it for each of its stages before round 1).
- optional `TRAINER`: the TRL trainer behind the stage, declared in full
  (`training.trainers.TRLTrainer`: its name, the module TRL keeps it in, whether it takes a
  reference model, what records it trains on, what it trains); the shared run skeletons
  (`training.fit`) read everything that differs between methods from it, and its config's other
  fields become settings too (config.resolve asks it, never imports it).

`cli.py` registers every stage from `REGISTRY`, config and presets receive a stage module from
here and import none themselves.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class Stage:
    name: str  # the subcommand
    training: bool = False  # writes a model dir and takes the common training options (flags.TRAINING)

    @property
    def module(self) -> str:
        return f"{__name__}.{self.name.replace('-', '_')}"


# the order of `alignctl --help`: the pipeline's order
REGISTRY: tuple[Stage, ...] = (
    Stage("collect"),
    Stage("label"),
    Stage("sft", training=True),
    Stage("train-rm", training=True),
    Stage("dpo", training=True),
    Stage("kto", training=True),
    Stage("orpo", training=True),
    Stage("simpo", training=True),
    Stage("grpo", training=True),
    Stage("rloo", training=True),
    Stage("online-dpo", training=True),
    Stage("ppo", training=True),
    Stage("iterate", training=True),
    Stage("eval"),
)


def names() -> list[str]:
    return [s.name for s in REGISTRY]


def get(name: str) -> Stage:
    for stage in REGISTRY:
        if stage.name == name:
            return stage
    from alignctl.config import suggest
    from alignctl.errors import InputError

    raise InputError(f"unknown stage {name!r}{suggest(name, names())}")


def load(name: str) -> ModuleType:
    """The stage's module (light: stage modules import torch & co. only inside functions)."""
    return importlib.import_module(get(name).module)


def resolve(name: str, **layers: Any):
    """A stage's resolved settings (config.resolve: defaults < preset < --config < --set < flags)."""
    from alignctl.config import resolve as resolve_settings

    return resolve_settings(load(name), **layers)
