"""Reward sources: one idea serving `label`, `grpo`, `online-dpo`, `ppo` and `eval`.

See docs/design.md ("One idea of a reward source"): a reward model dir, a rule
(`rules.py`: built-ins or a user's `file.py:func`), a pairwise LLM judge (`judge.py`), or a
human. Nothing heavy is imported here; models load on first use.

`resolve_source(spec, **opts)` turns a `--by`/`--reward` spec into a source object. Sources come
in two kinds, told apart by `source.pairwise`:

- pointwise (`rm:`, `rule:`): `score(prompts, completions, columns) -> list[float]`, one score per
  (prompt, completion); `columns` maps extra column names to one value per completion. Stages
  call it through `score_records` (records as read from a prompts or candidates file) or
  `score_columns` (TRL's keyword arguments, `trl_adapters.ScoreReward`).
- pairwise (`judge:`, `human`): `decide(prompt, a, b) -> Choice`: the winner (0 = a, 1 = b,
  None = tie) with the details (the judge's verdict in both orders, the key a person pressed).

Every source has `kind`, `pairwise` and `describe() -> dict`, safe to write into manifests and
records (an API key is never in it, only the name of the variable that holds it). TRL reward
functions over sources, and the `--reward` flags, are in `trl_adapters.py`.

    rm:runs/rm                          a reward model dir (num_labels=1)
    rule:accuracy  rule:my.py:func      a built-in rule or your function (rules.py)
    judge:smollm2-135m                  a local chat model as a pairwise judge
    judge:gpt-4o-mini --judge-url URL   an OpenAI-compatible endpoint (key from --judge-key-env)
    human                               you, at the terminal
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignctl.errors import InputError

SPEC_HELP = "rm:PATH, rule:NAME, rule:file.py:func, judge:MODEL (with --judge-url for an endpoint) or human"
# keyword arguments TRL's trainers pass next to the data columns: not columns of the user's file
TRAINER_KWARGS = frozenset({"trainer_state", "log_extra", "log_metric", "completion_ids", "environments"})
# fields of a prompts or candidates record that are not data for a rule (formats.md: "other columns")
NOT_COLUMNS = frozenset({"id", "prompt", "completions", "generator", "scores"})


@dataclass
class Choice:
    """One pairwise decision: `winner` 0 (first), 1 (second) or None (tie/skip), plus how it was made."""

    winner: int | None
    detail: dict[str, Any] = field(default_factory=dict)


class RuleSource:
    """Pointwise source over a rule; `.rule` is the callable with TRL's reward-function signature."""

    pairwise = False
    kind = "rule"

    def __init__(self, rule) -> None:
        self.rule = rule

    def score(self, prompts: list, completions: list, columns: dict | None = None) -> list[float]:
        return self.rule(prompts, completions, **(columns or {}))

    def describe(self) -> dict[str, Any]:
        return self.rule.describe()

    @property
    def needs(self) -> tuple[str, ...]:
        """The record columns the rule reads (`answer` for rule:accuracy)."""
        return self.rule.needs


class JudgeSource:
    """Pairwise source over `judge.PairwiseJudge` (both orders; disagreement is a tie)."""

    pairwise = True
    kind = "judge"

    def __init__(self, judge) -> None:
        self.judge = judge

    def decide(self, prompt: Any, a: Any, b: Any) -> Choice:
        return self.decide_all([prompt], [(a, b)])[0]

    @property
    def window(self) -> int:
        """Comparisons worth asking at once (label journals them as a group)."""
        return self.judge.window

    def decide_all(self, prompts: list, pairs: list[tuple[Any, Any]]) -> list[Choice]:
        """`pairs[i]` against `prompts[i]`, all together (requests in flight across prompts)."""
        verdicts = self.judge.judge_many(prompts, pairs)
        return [Choice(v.winner, {"orders": v.orders, "reason": v.reason}) for v in verdicts]

    def describe(self) -> dict[str, Any]:
        return self.judge.describe()


def check_columns(sources, records: list[dict], where: str | Path) -> None:
    """Every column a source reads (`needs`: rule:accuracy reads `answer`) present and non-empty
    in every record, checked on the records before any model loads: one line naming the first
    record that lacks it."""
    from alignctl.rewards.answers import acceptable

    for source in sources:
        for name in getattr(source, "needs", ()):
            lacking = [i for i, r in enumerate(records) if not acceptable(r.get(name))]
            if not lacking:
                continue
            spec = source.describe().get("spec", source.kind)
            present = sorted({k for r in records for k in r} - NOT_COLUMNS) or ["none"]
            raise InputError(
                f"{where}: record {lacking[0] + 1}: {spec} needs the `{name}` column, and {len(lacking)} of "
                f"{len(records)} records lack it or leave it empty (other columns: {', '.join(present)})"
            )


def score_records(source, records: list[dict], completions: list, prompts: list | None = None) -> list[float]:
    """Score `completions[i]` as the answer to `records[i]` with a pointwise source; one float each.

    The source sees record i's prompt (or `prompts[i]`, the caller's form of it), the completion
    (a plain-text answer to a message-list prompt becomes an assistant message, as a trainer
    would see it) and the records' other columns (e.g. `answer` for rule:qa), one value per
    completion. A record with several completions is given once per completion.
    """
    if prompts is None:
        prompts = [r["prompt"] for r in records]
    completions = [
        [{"role": "assistant", "content": c}] if isinstance(p, list) and isinstance(c, str) else c
        for p, c in zip(prompts, completions, strict=True)
    ]
    names = dict.fromkeys(k for r in records for k in r if k not in NOT_COLUMNS)
    return score_columns(source, prompts, completions, {k: [r.get(k) for r in records] for k in names})


def score_columns(source, prompts: list, completions: list, columns: dict[str, Any]) -> list[float]:
    """`source.score` on columns as a trainer passes them (its own keyword arguments dropped)."""
    data = {k: v for k, v in columns.items() if k not in TRAINER_KWARGS}
    return [float(s) for s in source.score(prompts, completions, data)]


def resolve_source(
    spec: str,
    *,
    judge_url: str | None = None,
    judge_model: str | None = None,
    judge_key_env: str = "OPENAI_API_KEY",
    judge_template: str | Path | None = None,
    judge_max_tokens: int = 16,
    batch_size: int = 16,
    max_length: int | None = 1024,
    trust_remote_code: bool = False,
):
    """A source for `spec` (see the module docstring). Checks the spec, files and dirs; loads no model."""
    spec = (spec or "").strip()
    if spec.startswith("rm:"):
        from alignctl.rewards.reward_model import RewardModelSource

        path = spec[len("rm:") :]
        return RewardModelSource(
            path, batch_size=batch_size, max_length=max_length, trust_remote_code=trust_remote_code
        )
    if spec.startswith("rule:"):
        from alignctl.rewards.rules import load_rule

        return RuleSource(load_rule(spec))
    if spec == "judge" or spec.startswith("judge:"):
        target = spec[len("judge:") :]
        return JudgeSource(
            _judge(target, judge_url, judge_model, judge_key_env, judge_template, judge_max_tokens, trust_remote_code)
        )
    if spec == "human":
        from alignctl.rewards.human import HumanSource

        return HumanSource()
    hint = None
    if spec and Path(spec).is_dir():
        hint = f"for a reward model dir write rm:{spec}"
    elif spec and not spec.startswith(("rm", "rule", "judge")):
        hint = f"for a built-in rule write rule:{spec}"
    raise InputError(f"unknown reward source {spec!r}: expected {SPEC_HELP}", hint=hint)


def _judge(
    target: str, url: str | None, model: str | None, key_env: str, template, max_tokens: int, trust_remote_code: bool
):
    from alignctl.rewards.judge import DEFAULT_TEMPLATE, OpenAIChatClient, PairwiseJudge, load_template

    text = load_template(template) if template else DEFAULT_TEMPLATE
    if target.startswith(("http://", "https://")):
        if url and url != target:
            raise InputError(f"judge:{target} and --judge-url {url}: give the endpoint once")
        url, target = target, ""
    if url:
        if target and model and target != model:
            raise InputError(f"judge:{target} and --judge-model {model}: give the endpoint's model once")
        name = target or model
        if not name:
            raise InputError("an endpoint judge needs a model name: judge:MODEL or --judge-model MODEL")
        client = OpenAIChatClient(url, name, api_key_env=key_env, max_tokens=max_tokens)
    else:
        if not target:
            raise InputError("judge needs a model: judge:MODEL (a local dir or alias), or --judge-url for an endpoint")
        if model and model != target:
            raise InputError("--judge-model names the model of an endpoint; give --judge-url too")
        from alignctl.rewards.local_chat import LocalChatClient

        client = LocalChatClient(target, max_new_tokens=max_tokens, trust_remote_code=trust_remote_code)
    return PairwiseJudge(client, text)
