"""What the online stages (`grpo`, `online-dpo`) share: reward sources, prompt preparation, CPU settings.

Both stages sample completions from the policy during training and score them with reward
sources (design.md, "One idea of a reward source", resolved by `alignctl.rewards.resolve_source`).
Nothing here loads a model; a reward model loads on its first score.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from alignctl import io
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
# Prompts


def read_prompts(path: str | Path) -> list[dict]:
    """Prompt records with every extra column kept (TRL hands them to reward functions)."""
    return [dict(r) for r in io.load(path, "prompts")]


def apply_chat_format(records: list[dict], tokenizer, *, enabled: bool, path: str | Path) -> None:
    """Make prompts uniform for TRL, in place.

    TRL applies the chat template only to message-list prompts and feeds plain strings to the
    model raw; for an instruct model a raw question is a text to continue, not a question to
    answer. So with `chat_template` on (the default) and a tokenizer that has a template, each
    plain-text prompt becomes one user message, with one printed line saying so.
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    plain = [r for r in records if isinstance(r["prompt"], str)]
    n_conv = len(records) - len(plain)
    if n_conv and not has_template:
        raise InputError(f"{path}: prompts are message lists but the model's tokenizer has no chat template")
    if plain and has_template and enabled:
        for r in plain:
            r["prompt"] = [{"role": "user", "content": r["prompt"]}]
        note(
            f"{len(plain)} plain-text prompt{'s' if len(plain) != 1 else ''} sent as user messages through the "
            "model's chat template (--set chat_template=false sends raw text)"
        )
    elif plain and n_conv:
        raise InputError(f"{path}: mixes plain-text and message-list prompts; use one kind per file")


def prompt_tokens(tokenizer, prompt: str | list[dict]) -> int:
    """Tokens the trainer will feed the model for `prompt`: after the chat template, specials included."""
    if isinstance(prompt, str):
        return len(tokenizer(prompt)["input_ids"])
    enc = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
    return len(enc["input_ids"])


def _drop_front(tokenizer, text: str, n: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[n:]) if n < len(ids) else ""


def truncate_left(tokenizer, prompt: str | list[dict], limit: int) -> str | list[dict]:
    """`prompt` cut from the left until it fits in `limit` tokens; the end of the prompt is kept.

    A message list loses text from its earliest message first (its role and the template's
    markup stay); decoding and re-encoding can shift a token boundary, hence the loop.
    """
    prompt = copy.deepcopy(prompt)
    for _ in range(64):
        over = prompt_tokens(tokenizer, prompt) - limit
        if over <= 0:
            return prompt
        if isinstance(prompt, str):
            if not prompt:
                break
            prompt = _drop_front(tokenizer, prompt, over)
            continue
        first = next((m for m in prompt if m.get("content")), None)
        if first is None:
            break
        first["content"] = _drop_front(tokenizer, first["content"], over)
    raise InputError(
        f"max_prompt_length={limit} is shorter than the chat template's own markup; raise --max-prompt-length"
    )


def fit_prompts(records: list[dict], tokenizer, limit: int | None, *, strict: bool, path: str | Path) -> int:
    """Apply our max_prompt_length (TRL 1.16 dropped it): truncate from the left, or reject with --strict.

    Returns the number of prompts truncated. The chapter's GRPO command caps prompts at 512
    tokens ("强化学习 GRPO 训练": --max_prompt_length 512); truncating from the left keeps the end
    of the prompt, where the question usually is.
    """
    if not limit:
        return 0
    over = [(r, n) for r in records if (n := prompt_tokens(tokenizer, r["prompt"])) > limit]
    if not over:
        return 0
    if strict:
        rec, n = over[0]
        raise InputError(
            f"{path}: {len(over)} prompt{'s are' if len(over) > 1 else ' is'} longer than max_prompt_length={limit} "
            f"tokens (first: id {rec['id']!r}, {n} tokens)",
            hint="raise --max-prompt-length, or drop --strict to truncate them from the left",
        )
    for rec, _ in over:
        rec["prompt"] = truncate_left(tokenizer, rec["prompt"], limit)
    note(
        f"truncated {len(over)} of {len(records)} prompts to max_prompt_length={limit} tokens, from the left "
        "(--strict rejects them instead)"
    )
    return len(over)


def prompts_dataset(records: list[dict], path: str | Path):
    """A `datasets.Dataset`; columns whose types differ between lines are an InputError, not a crash."""
    from datasets import Dataset

    try:
        return Dataset.from_list(records)
    except (TypeError, ValueError) as exc:  # pyarrow's ArrowInvalid / ArrowTypeError subclass these
        raise InputError(f"{path}: a column has values of different types on different lines ({exc})") from None


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


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None
