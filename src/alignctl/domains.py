"""What values each setting accepts (its domain), checked before any model loads.

A setting's type (int, float, bool, a list) is checked as each layer is merged (`coerce`); its
domain once every layer is in, against the value that will run (`check`):

- a number range, written as the docs write it: `> 0`, `>= 1`, `[0, 1]`, `(0, 1]`, `-1 or >= 1`;
- `a file` / `a dir` (a path that exists), `a model` (a model dir, the alias, or a hub id),
  `a preset` (a shipped preset's name or a preset file); parts join with ` or `;
- choices: a `Literal` or an `Enum` in the field's type (transformers' `OptimizerNames | str`),
  or `choices` in the field's metadata (TRL's argparse convention, used by alignctl's own fields
  too). A setting alignctl declares that is also a field of the stage's TRL config takes TRL's
  choices as well, so `--set optim=adam` fails here, not in the trainer after the model loaded.

Where a domain comes from: the field's own metadata (`settings.setting(..., domain=...)`), which
a stage uses where its method differs (grpo's `beta` may be 0: no KL term), else `DOMAINS` below,
one table by TRL name for every stage and every TRL field reachable through `--set`, so a new
stage with a Settings dataclass (and a TRL trainer) is checked with no list of its own.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import functools
import math
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignctl.errors import InputError

POSITIVE, NON_NEGATIVE, COUNT, FRACTION, UNIT = "> 0", ">= 0", ">= 1", "[0, 1]", "(0, 1]"

DOMAINS: dict[str, str] = {
    # optimisation
    "learning_rate": POSITIVE,
    "value_learning_rate": POSITIVE,
    "num_train_epochs": POSITIVE,
    "max_steps": "-1 or >= 1",
    "max_minutes": POSITIVE,
    "warmup_steps": NON_NEGATIVE,  # below 1: a fraction of the steps (transformers 5)
    "weight_decay": NON_NEGATIVE,
    "max_grad_norm": NON_NEGATIVE,  # 0: no clipping
    "adam_epsilon": POSITIVE,
    "adam_beta1": "[0, 1)",
    "adam_beta2": "[0, 1)",
    "label_smoothing_factor": "[0, 1)",
    "neftune_noise_alpha": NON_NEGATIVE,
    "seed": "[0, 4294967295]",  # numpy's seed range
    "data_seed": "[0, 4294967295]",
    # sizes and counts
    "per_device_train_batch_size": COUNT,
    "per_device_eval_batch_size": COUNT,
    "batch_size": COUNT,
    "gradient_accumulation_steps": COUNT,
    "generation_batch_size": COUNT,
    "local_rollout_forward_batch_size": COUNT,
    "precompute_ref_batch_size": COUNT,
    "eval_accumulation_steps": COUNT,
    "dataset_num_proc": COUNT,
    "dataloader_num_workers": NON_NEGATIVE,
    "num_generations": ">= 2",  # group-relative methods compare answers within a group
    "num_iterations": COUNT,
    "num_ppo_epochs": COUNT,
    "num_mini_batches": COUNT,
    "total_episodes": COUNT,
    "num_samples": COUNT,
    "rounds": COUNT,
    "logging_steps": POSITIVE,  # TRL: below 1, a fraction of the steps
    "save_steps": NON_NEGATIVE,  # 0 or null: no checkpoints
    "eval_steps": NON_NEGATIVE,  # 0 or null: no periodic evaluation
    "save_total_limit": NON_NEGATIVE,
    "max_concurrency": COUNT,
    "max_retries": NON_NEGATIVE,
    "request_timeout": POSITIVE,
    # lengths in tokens
    "max_length": COUNT,
    "max_prompt_length": COUNT,
    "max_completion_length": COUNT,
    "max_new_tokens": COUNT,
    "eval_max_new_tokens": COUNT,
    "response_length": COUNT,
    "judge_max_tokens": COUNT,
    # LoRA
    "lora_r": COUNT,
    "lora_alpha": POSITIVE,
    "lora_dropout": "[0, 1)",
    # losses
    "beta": POSITIVE,  # the preference losses divide by it or vanish at 0; grpo says >= 0 on its field
    "label_smoothing": "[0, 0.5)",  # robust DPO divides by 1 - 2 * label_smoothing
    "desirable_weight": POSITIVE,
    "undesirable_weight": POSITIVE,
    "epsilon": POSITIVE,
    "cliprange": POSITIVE,
    "cliprange_value": POSITIVE,
    "kl_coef": NON_NEGATIVE,
    "vf_coef": NON_NEGATIVE,
    "gamma": FRACTION,
    "lam": FRACTION,
    "center_rewards_coefficient": NON_NEGATIVE,
    "missing_eos_penalty": NON_NEGATIVE,
    "value_trainable_layers": UNIT,
    "min_margin": NON_NEGATIVE,
    "tie_margin": NON_NEGATIVE,
    # sampling
    "temperature": POSITIVE,  # a trainer's log-probs divide by it; collect / eval allow 0 (greedy)
    "eval_temperature": NON_NEGATIVE,
    "top_p": UNIT,
    "top_k": NON_NEGATIVE,
    "min_p": FRACTION,
    "repetition_penalty": POSITIVE,
    "vllm_gpu_memory_utilization": UNIT,
    "vllm_tensor_parallel_size": COUNT,
    "vllm_server_port": "[1, 65535]",
    "vllm_server_timeout": POSITIVE,
    # paths and references
    "eval_split": "[0, 1) or a file",  # the fraction held out (0 or null: none), or a file of them
    "ref_model": "a model",
    "deepspeed": "a file",
    "fsdp_config": "a file",
    "accelerator_config": "a file",
    "resume_from_checkpoint": "a dir",
    "dpo_preset": "a preset",
    "trainer_preset": "a preset",
    "rm_preset": "a preset",
}

# config.find_preset, which config (above this module) puts here: the "a preset" domain's test
find_preset: Callable[[str], Any] = lambda name: None  # noqa: E731
_BOUND = re.compile(r"^(>=|>|<=|<)\s*(-?[\d.e+]+)$")
_RANGE = re.compile(r"^([\[(])\s*(-?[\d.e+]+)\s*,\s*(-?[\d.e+]+)\s*([\])])$")
_NUMBER = re.compile(r"^-?[\d.]+(e[+-]?\d+)?$")
WORDS = {  # path-like parts, as the messages say them
    "a file": "a file that exists",
    "a dir": "a directory that exists",
    "a model": "a model dir, a hub id or the alias smollm2-135m",
    "a preset": "a preset name (alignctl presets list) or a preset file",
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _holds(part: str, value: Any) -> bool:
    """Whether `value` lies in one part of a domain ("> 0", "[0, 1)", "-1", "a file", ...)."""
    if part in WORDS:
        return isinstance(value, str) and _reference_ok(part, value)
    x = _number(value)
    if x is None or not math.isfinite(x):
        return False
    if m := _BOUND.match(part):
        op, bound = m.group(1), float(m.group(2))
        return {">": x > bound, ">=": x >= bound, "<": x < bound, "<=": x <= bound}[op]
    if m := _RANGE.match(part):
        lo, hi = float(m.group(2)), float(m.group(3))
        above = x >= lo if m.group(1) == "[" else x > lo
        below = x <= hi if m.group(4) == "]" else x < hi
        return above and below
    if _NUMBER.match(part):
        return x == float(part)
    raise ValueError(f"domain part {part!r}: not one alignctl knows")


def _reference_ok(kind: str, value: str) -> bool:
    if kind == "a file":
        return Path(value).expanduser().is_file()
    if kind == "a dir":
        return Path(value).expanduser().is_dir()
    if kind == "a preset":
        try:
            find_preset(value)
        except InputError:
            return False
        return True
    from alignctl import models

    return models.reference_problem(value) is None


@dataclasses.dataclass(frozen=True)
class Domain:
    """The values a setting accepts, as its text (`> 0`, `[0, 1) or a file`, ...) or its choices."""

    text: str = ""
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        for part in self.parts:  # a typo in a table is a bug, found at import by the tests
            _holds(part, 0)

    @property
    def parts(self) -> list[str]:
        return [p.strip() for p in self.text.split(" or ")] if self.text else []

    def contains(self, value: Any) -> bool:
        if value is None:  # the type said whether null is allowed (coerce)
            return True
        if isinstance(value, list):
            return all(self.contains(v) for v in value)
        if self.choices and value not in self.choices:
            return False
        return not self.parts or any(_holds(p, value) for p in self.parts)

    def describe(self) -> str:
        if self.choices:
            shown = ", ".join(map(str, self.choices[:12])) + (", ..." if len(self.choices) > 12 else "")
            return f"one of {shown}" + (f" ({len(self.choices)} in all)" if len(self.choices) > 12 else "")
        return " or ".join(WORDS.get(p) or (f"in {p}" if p[0] in "[(" else p) for p in self.parts)


def choices_of(tp: Any, metadata: typing.Mapping[str, Any] | None = None) -> tuple[Any, ...]:
    """The values a field's type or metadata allows, if it names them: a Literal's, an Enum's
    (`SchedulerType | str` means a SchedulerType value written as text), or `choices`."""
    found: list[Any] = []
    for t in typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, type(int | None)) else (tp,):
        if typing.get_origin(t) is typing.Literal:
            found += [a for a in typing.get_args(t) if a is not False]
        elif isinstance(t, type) and issubclass(t, enum.Enum):
            found += [m.value for m in t]
    if metadata and metadata.get("choices"):
        found += list(metadata["choices"])
    return tuple(dict.fromkeys(found))


def _base_types(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for t in typing.get_args(tp))
    return (tp,)


def coerce(key: str, value: Any, tp: Any, where: str) -> Any:
    """Check `value` against a Settings field type; ints widen to floats. InputError otherwise."""
    allowed = _base_types(tp)
    if value is None:
        if type(None) in allowed:
            return None
        raise InputError(f"{where}: {key} must not be null")
    for t in allowed:
        if t is type(None):
            continue
        if t is Any:
            return value
        origin = typing.get_origin(t) or t
        if origin is typing.Literal and value in typing.get_args(t):
            return value
        if origin is dict and isinstance(value, dict):
            return dict(value)
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value) if isinstance(value, float) or abs(value) < 2**1023 else math.inf
            if not math.isfinite(number):  # nan/inf would train on garbage or crash mid-run
                raise InputError(f"{where}: {key} must be a finite number, got {value!r}")
            return number
        if t is str and isinstance(value, str):
            return value
        if origin is list and isinstance(value, list):
            (inner,) = typing.get_args(t) or (Any,)
            if inner is Any or all(isinstance(v, inner) for v in value):
                return list(value)
        if origin is list and isinstance(value, str) and typing.get_args(t) == (str,):
            return [v.strip() for v in value.split(",") if v.strip()]
        if origin is list and isinstance(value, str) and typing.get_args(t) == (float,):
            return [_number_in_list(key, part, value, where) for part in value.split(",")]
    names = " or ".join(_type_name(t) for t in allowed if t is not type(None))
    raise InputError(f"{where}: {key} must be {names}, got {value!r}")


def _number_in_list(key: str, part: str, text: str, where: str) -> float:
    """One item of a comma-separated list of numbers (`--reward-weights 1,0.5`)."""
    try:
        number = float(part)
    except ValueError:
        raise InputError(f"{where}: {key}: {part.strip()!r} is not a number (in {text!r})") from None
    if not math.isfinite(number):
        raise InputError(f"{where}: {key} must be finite numbers, got {text!r}")
    return number


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    if origin is list:
        return "a list"
    if origin is dict or t is dict:
        return "a mapping"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(t)))
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    return names.get(t) or getattr(t, "__name__", str(t))


def domain_of(key: str, field: dataclasses.Field | None = None, trl_type: Any = None, trl_field=None) -> Domain | None:
    """A setting's domain: its field's `domain` metadata, else `DOMAINS`; choices from its own
    type and metadata and, for a setting that is also a TRL field, from TRL's."""
    meta = field.metadata if field is not None else {}
    text = meta.get("domain") or DOMAINS.get(key, "")
    choices = choices_of(field.type, meta) if field is not None else ()
    if trl_type is not None:
        trl_choices = choices_of(trl_type, trl_field.metadata if trl_field is not None else None)
        choices = tuple(c for c in choices if c in trl_choices) if choices and trl_choices else choices or trl_choices
    if not text and not choices:
        return None
    return Domain(text, choices)


def check(stage: Any, values: dict[str, Any], wheres: dict[str, str], fields: dict[str, dataclasses.Field]) -> None:
    """Every value a user layer gave (`wheres`: key -> the flag, `--set` item or file:line it came
    from) against its domain; all problems as one InputError (one line). Built-in defaults and
    shipped presets are checked by the tests instead, so they need no TRL import here."""
    problems = []
    for key, where in wheres.items():
        value = values[key]
        field = fields.get(key)
        trl = trl_config_fields(stage) if field is None or _could_have_choices(value) else {}
        trl_field = trl.get(key)
        domain = domain_of(key, field, trl_field.type if trl_field else None, trl_field)
        if domain is None or domain.contains(value):
            continue
        if isinstance(value, str) and _number(value) is None and any(p in WORDS for p in domain.parts):
            word = next(p for p in domain.parts if p in WORDS)
            what = {"a model": "no such model", "a preset": "no such preset", "a dir": "no such directory"}.get(
                word, "file not found"
            )
            problems.append(f"{where}: {value}: {what} ({key} takes {domain.describe()})")
            continue
        problems.append(f"{where}: {key} must be {domain.describe()}, got {value!r}{_hint(domain, value)}")
    if problems:
        raise InputError("; ".join(problems))


def _could_have_choices(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


@functools.cache
def trl_config_fields(stage: Any) -> dict[str, dataclasses.Field]:
    """The fields of the TRL config behind `stage` (its `TRAINER`), each with its type resolved
    (copies: TRL's own field objects are left as they are); {} for a stage without one."""
    trainer = getattr(stage, "TRAINER", None)  # the stage's TRL trainer declaration, asked, never imported
    if trainer is None:
        return {}
    cls = trainer.classes()[0]
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.init:
            twin = copy.copy(f)
            twin.type = hints.get(f.name, Any)
            out[f.name] = twin
    return out


def _hint(domain: Domain, value: Any) -> str:
    if not domain.choices or not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(c) for c in domain.choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
