"""What the online stages (`grpo`, `online-dpo`) share: reward sources and CPU settings.

Both stages sample completions from the policy during training and score them with reward
sources (design.md, "One idea of a reward source", resolved by `alignctl.rewards.resolve_source`).
Nothing here loads a model; a reward model loads on its first score.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from alignctl.config import Resolved
from alignctl.console import note
from alignctl.errors import InputError

# keyword arguments TRL's trainers pass next to the prompts file's columns
TRAINER_KWARGS = frozenset({"trainer_state", "log_extra", "log_metric", "completion_ids", "environments"})
REWARD_HELP = (
    "rule:NAME (built-in, e.g. rule:accuracy), rule:file.py:func (your function) or rm:PATH (a reward model dir)"
)


# ---------------------------------------------------------------------------------------------
# Reward sources


def _as_spec(spec: str) -> str:
    """`--reward` specs as `resolve_source` takes them; a bare `file.py:func` is a rule."""
    spec = spec.strip()
    if spec.startswith("judge") or spec == "human":
        raise InputError(
            f"--reward {spec}: a pairwise source compares two answers and gives no score to one; "
            "use a judge with online-dpo --judge (GRPO needs a score per completion)"
        )
    if spec.startswith(("rm:", "rule:")):
        return spec
    if Path(spec).is_dir():
        raise InputError(f"--reward {spec}: a directory; for a reward model write rm:{spec}")
    if ".py:" in spec:
        return f"rule:{spec}"
    return spec  # resolve_source names what is wrong with it


def parse_rewards(specs: list[str] | None, *, required: bool = True, trust_remote_code: bool = False) -> list:
    """Pointwise reward sources for `--reward` specs (alignctl.rewards.resolve_source); loads no model.

    GRPO and online DPO take a score per completion, so pairwise sources (a judge, a human) are
    refused here; online-dpo takes a judge through its own `--judge` flags.
    """
    from alignctl.rewards import resolve_source

    if not specs:
        if required:
            raise InputError(f"give at least one --reward: {REWARD_HELP}")
        return []
    sources = []
    for spec in specs:
        sources.append(resolve_source(_as_spec(spec), trust_remote_code=trust_remote_code))
    return sources


class ScoreReward:
    """A pointwise reward source (e.g. a reward model) with TRL's reward-function signature.

    TRL could score a reward model itself; going through the source's `score` keeps one scorer
    for `label`, `grpo`, `online-dpo` and `eval` (same chat template, truncation, batching).
    `__name__` labels the reward in TRL's logs (`rewards/<name>/mean`).
    """

    def __init__(self, source, name: str) -> None:
        self.source = source
        self.__name__ = name

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        columns = {k: v for k, v in kwargs.items() if k not in TRAINER_KWARGS}
        return self.source.score(prompts, completions, columns)


def reward_funcs(sources: list) -> list:
    """The `reward_funcs` list for a TRL trainer: rules as they are, other sources wrapped."""
    funcs = []
    for source in sources:
        rule = getattr(source, "rule", None)
        if rule is not None:
            funcs.append(rule)
        else:
            path = getattr(source, "path", None)
            funcs.append(ScoreReward(source, f"{source.kind}.{Path(path).name}" if path else source.kind))
    return funcs


def parse_weights(text: str | None) -> list[float] | None:
    """`--reward-weights 1,0.5` -> [1.0, 0.5]."""
    if text is None or not str(text).strip():
        return None
    weights = []
    for part in str(text).split(","):
        try:
            value = float(part)
        except ValueError:
            raise InputError(f"--reward-weights {text}: {part.strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise InputError(f"--reward-weights {text}: weights must be finite numbers")
        weights.append(value)
    return weights


def check_weights(weights: list[float] | None, n_sources: int) -> None:
    if weights is not None and len(weights) != n_sources:
        raise InputError(
            f"--reward-weights has {len(weights)} value{'s' if len(weights) != 1 else ''} "
            f"for {n_sources} reward source{'s' if n_sources != 1 else ''}; give one weight per --reward"
        )


# ---------------------------------------------------------------------------------------------
# Device


def adjust_checkpointing(resolved: Resolved, *, cuda: bool) -> None:
    """Gradient checkpointing off on CPU unless the user asked for it (one printed line).

    On CPU it only costs time: DPO steps ran ~15% slower with it, and TRL's online DPO then
    generates without the KV cache, ~10x slower (design.md, "Facts measured on this machine").
    A value from a preset or the built-in defaults is changed; one from --set, --config or a
    flag is the user's and is kept.
    """
    if cuda or not resolved.get("gradient_checkpointing"):
        return
    source = resolved.sources.get("gradient_checkpointing", "")
    if source.startswith(("preset", "default")):
        resolved.override("gradient_checkpointing", False, "auto: no CUDA device")
        note(f"no CUDA device: gradient_checkpointing off ({resolved.stage} asked for it; on CPU it only costs time)")
