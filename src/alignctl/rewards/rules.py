"""Rule rewards: built-in scoring functions and a user's own `path/to/file.py:func`.

One of the four kinds of reward source in docs/design.md ("One idea of a reward source"). Every
rule has TRL's reward-function signature, so the same object serves `grpo` (as a `reward_funcs`
entry), `online-dpo`, `label` and `eval`::

    func(prompts: list, completions: list, **columns) -> list[float]

`prompts` and `completions` are plain strings or, for conversational data, message lists; the
score is computed on the text of the last assistant message. `columns` are the extra columns of
the prompts file (e.g. `answer`), one value per completion, plus whatever the trainer adds
(`trainer_state`, `completion_ids`, ...), which rules ignore.

The chapter (section "强化学习 GRPO 训练") notes that GRPO can be trained from rules alone, without
a reward model; these are such rules. A spec names one:

    rule:accuracy                     rule:length?target=20
    rule:format?pattern=^<answer>.*</answer>$
    rule:qa                           rule:my_rewards.py:brevity

Parameter values are taken literally (no %-decoding, so a regex survives intact); `&` followed by
`name=` starts the next parameter. The rules that check an answer column (accuracy, contains, qa,
qa_strict) are in `answers.py`; how a completion is read as text, in `text.py`.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.machinery
import importlib.util
import math
import numbers
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from alignctl.errors import AlignctlError, InputError
from alignctl.io import text_length
from alignctl.rewards.answers import accuracy, brevity, contains, qa, qa_strict
from alignctl.rewards.text import completion_text

RewardFunc = Callable[..., list[float]]

DEFAULT_FORMAT_PATTERN = r"^<think>.*?</think>\s*<answer>.*?</answer>$"


# --------------------------------------------------------------------------- generic rules


def format_reward(
    prompts: list,
    completions: list,
    *,
    pattern: str = DEFAULT_FORMAT_PATTERN,
    **columns: Any,
) -> list[float]:
    """1.0 when the whole completion matches `pattern` (DOTALL: `.` spans lines), else 0.0.

    The default is DeepSeek-R1's `<think>...</think><answer>...</answer>` layout.
    """
    regex = re.compile(pattern, re.DOTALL)
    return [float(regex.fullmatch(completion_text(c).strip()) is not None) for c in completions]


def length(
    prompts: list,
    completions: list,
    *,
    target: int | None = None,
    **columns: Any,
) -> list[float]:
    """Rewards shorter answers.

    Without `target`: -words/100 (unbounded, every word costs the same; useful only next to a
    quality reward). With `target`: 1.0 at or under `target` words, then linear down to 0.0 at
    3 x target words — the same shape as `qa`'s brevity term, so `length?target=12` equals it.
    """
    words = [text_length(completion_text(c)) for c in completions]
    if target is None:
        return [-w / 100 for w in words]
    return [brevity(w, target, 2 * target) for w in words]


@dataclass(frozen=True)
class Param:
    type: type
    default: Any
    help: str


@dataclass(frozen=True)
class RuleInfo:
    """A built-in rule as shown in help text."""

    name: str
    func: RewardFunc
    summary: str
    params: dict[str, Param] = field(default_factory=dict)

    @property
    def usage(self) -> str:
        if not self.params:
            return f"rule:{self.name}"
        return f"rule:{self.name}[?" + "&".join(f"{k}=..." for k in self.params) + "]"

    def __str__(self) -> str:
        lines = [f"{self.usage}  {self.summary}"]
        for key, p in self.params.items():
            lines.append(f"    {key} ({p.type.__name__}, default {p.default!r}): {p.help}")
        return "\n".join(lines)


_COLUMN = Param(str, "answer", "column holding the reference answer(s)")

BUILTINS: dict[str, RuleInfo] = {
    info.name: info
    for info in [
        RuleInfo(
            "accuracy",
            accuracy,
            "1.0 if the final answer (last \\boxed{} or number) equals the `answer` column",
            {"column": _COLUMN, "tolerance": Param(float, 1e-6, "relative tolerance for numbers")},
        ),
        RuleInfo(
            "format",
            format_reward,
            "1.0 if the completion fully matches a regex (default <think>..</think><answer>..</answer>)",
            {"pattern": Param(str, DEFAULT_FORMAT_PATTERN, "regex, matched with DOTALL")},
        ),
        RuleInfo(
            "length",
            length,
            "shorter is better: -words/100, or 1.0 up to `target` words decaying to 0 at 3x",
            {"target": Param(int, None, "word budget; unset means -words/100")},
        ),
        RuleInfo(
            "contains",
            contains,
            "1.0 if the `answer` column appears in the completion (case-insensitive)",
            {"column": _COLUMN},
        ),
        RuleInfo(
            "qa",
            qa,
            "0.6 x answer present (whole words) + 0.4 x brevity (<= 12 words full credit)",
            {
                "column": _COLUMN,
                "max_words": Param(int, 12, "words with full brevity credit"),
                "decay_words": Param(int, 24, "words past max_words until brevity credit is 0"),
            },
        ),
        RuleInfo(
            "qa_strict",
            qa_strict,
            "1.0 if the answer is present and the completion has <= 12 words (eval metric)",
            {"column": _COLUMN, "max_words": Param(int, 12, "word limit")},
        ),
    ]
}


def list_rules() -> list[RuleInfo]:
    """The built-in rules, in a stable order, for `--help` and `alignctl rules`-style listings."""
    return list(BUILTINS.values())


# --------------------------------------------------------------------------- the loaded rule


@dataclass
class RuleReward:
    """A rule ready to call, with TRL's reward-function signature and a stable `name`.

    `name` doubles as `__name__`, which TRL uses to label the reward in its logs
    (`rewards/<name>/mean`). Every call checks that the rule returned one finite number per
    completion, so a broken user rule fails with its name rather than deep inside a trainer.
    """

    name: str
    func: RewardFunc
    spec: str
    params: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    sha256: str | None = None
    needs: tuple[str, ...] = ()  # the record columns it reads (the answer rules' `column`)

    def __post_init__(self) -> None:
        self.__name__ = self.name

    def __call__(self, prompts: list, completions: list, **columns: Any) -> list[float]:
        try:
            result = self.func(prompts=prompts, completions=completions, **columns)
        except AlignctlError:
            raise
        except Exception as exc:
            if self.path is None:
                raise
            raise AlignctlError(f"{self.spec} raised {type(exc).__name__}: {exc}") from exc
        return self._check(result, len(completions))

    def _check(self, result: Any, n: int) -> list[float]:
        if isinstance(result, (str, bytes)) or not isinstance(result, Sequence):
            if not hasattr(result, "tolist"):  # numpy arrays and tensors are fine
                raise AlignctlError(f"{self.spec} returned {type(result).__name__}; expected a list of floats")
            result = result.tolist()
        if len(result) != n:
            raise AlignctlError(f"{self.spec} returned {len(result)} rewards for {n} completions")
        rewards = []
        for i, value in enumerate(result):
            if isinstance(value, numbers.Real):
                value = float(value)
                if math.isfinite(value):
                    rewards.append(value)
                    continue
            raise AlignctlError(f"{self.spec} returned {value!r} at index {i}; every reward must be a finite number")
        return rewards

    def describe(self) -> dict[str, Any]:
        """Provenance for manifests and `label` records."""
        out: dict[str, Any] = {"kind": "rule", "name": self.name, "spec": self.spec}
        if self.params:
            out["params"] = dict(self.params)
        if self.path is not None:
            out["path"] = self.path
            out["sha256"] = self.sha256
        return out


def _split_params(query: str) -> list[tuple[str, str]]:
    pairs = []
    for chunk in re.split(r"&(?=[A-Za-z_]\w*=)", query):
        key, sep, value = chunk.partition("=")
        if not sep or not key:
            raise InputError(f"bad rule parameter {chunk!r}: expected key=value")
        pairs.append((key, value))
    return pairs


def _convert(rule: str, key: str, raw: str, param: Param) -> Any:
    if param.type is str:
        return raw
    try:
        return param.type(raw)
    except ValueError:
        raise InputError(f"rule:{rule}: parameter {key}={raw!r} is not a valid {param.type.__name__}") from None


def _load_builtin(spec: str, body: str) -> RuleReward:
    name, _, query = body.partition("?")
    info = BUILTINS.get(name)
    if info is None:
        close = difflib.get_close_matches(name, BUILTINS, n=1)
        hint = f"did you mean rule:{close[0]}?" if close else None
        known = ", ".join(BUILTINS)
        raise InputError(f"unknown rule {name!r} in {spec!r} (built-ins: {known})", hint=hint)
    params: dict[str, Any] = {}
    for key, raw in _split_params(query) if query else []:
        if key not in info.params:
            close = difflib.get_close_matches(key, info.params, n=1)
            allowed = ", ".join(info.params) or "none"
            raise InputError(
                f"rule:{name} has no parameter {key!r} (parameters: {allowed})",
                hint=f"did you mean {close[0]}?" if close else None,
            )
        params[key] = _convert(name, key, raw, info.params[key])
    if name == "format":
        try:
            re.compile(params.get("pattern", DEFAULT_FORMAT_PATTERN), re.DOTALL)
        except re.error as exc:
            raise InputError(f"rule:format: bad regex {params['pattern']!r}: {exc}") from None
    for key in ("target", "max_words", "decay_words"):
        if key in params and params[key] <= 0:
            raise InputError(f"rule:{name}: {key} must be a positive integer, got {params[key]}")
    canonical = name + ("?" + "&".join(f"{k}={v}" for k, v in sorted(params.items())) if params else "")
    # Metric-friendly id: loggers treat "/" and "?" specially; parentheses are safe everywhere.
    rule_id = name + ("(" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) + ")" if params else "")
    func = partial(info.func, **params) if params else info.func
    needs = (params.get("column", info.params["column"].default),) if "column" in info.params else ()
    return RuleReward(name=rule_id, func=func, spec=f"rule:{canonical}", params=params, needs=needs)


def _load_file(spec: str, body: str) -> RuleReward:
    path_str, sep, func_name = body.rpartition(":")
    if not sep or not path_str or not func_name:
        raise InputError(f"rule spec {spec!r}: expected rule:path/to/file.py:function")
    path = Path(path_str).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "no such file"
        raise InputError(f"{path_str}: {what} (from rule spec {spec!r})")
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    # A unique module name per file, registered in sys.modules so dataclasses, pickling and
    # relative lookups inside the user's module behave as in a normal import.
    module_name = f"alignctl_user_rule_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    loader = importlib.machinery.SourceFileLoader(module_name, str(path))
    module_spec = importlib.util.spec_from_file_location(module_name, str(path), loader=loader)
    assert module_spec is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise InputError(f"{path_str}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:
        del sys.modules[module_name]
        raise InputError(f"{path_str}: importing failed: {type(exc).__name__}: {exc}") from exc
    func = getattr(module, func_name, None)
    if func is None:
        available = sorted(
            k
            for k, v in vars(module).items()
            if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == module_name
        )
        hint = "parameters (?k=v) are only for built-in rules" if "?" in func_name else None
        raise InputError(
            f"{path_str}: no function {func_name!r} (functions defined there: {', '.join(available) or 'none'})",
            hint=hint,
        )
    if not callable(func):
        raise InputError(f"{path_str}: {func_name!r} is not callable (it is a {type(func).__name__} value)")
    return RuleReward(
        name=f"{path.stem}.{func_name}",
        func=func,
        spec=f"rule:{path_str}:{func_name}",
        path=str(path),
        sha256=digest,
    )


def _is_file_spec(body: str) -> bool:
    head = body.partition("?")[0]
    return ":" in head or "/" in head or "\\" in head or head.endswith(".py")


def load_rule(spec: str) -> RuleReward:
    """Resolve `rule:NAME[?k=v&...]` or `rule:path/to/file.py:func` (the `rule:` prefix is optional).

    User files load only from the path named, never from sys.path. Bad specs, missing files or
    functions, and syntax errors raise InputError naming the path.
    """
    body = spec[len("rule:") :] if spec.startswith("rule:") else spec
    if not body:
        raise InputError(f"empty rule spec {spec!r}: expected rule:NAME or rule:file.py:function")
    if _is_file_spec(body):
        return _load_file(spec, body)
    return _load_builtin(spec, body)
