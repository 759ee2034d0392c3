"""Reward sources as TRL reward functions, and what the `--reward` and judge flags name.

TRL's online trainers (`GRPOTrainer`, `OnlineDPOTrainer`) take `reward_funcs`: callables
`f(prompts, completions, **columns) -> list[float]` whose `__name__` labels them in the logs
(`rewards/<name>/mean`). A rule already is one; a reward model is wrapped (`ScoreReward`), and a
pairwise judge becomes one for online DPO (`JudgeReward`). Nothing here loads a model; a reward
model loads on its first score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignctl.errors import AlignctlError, InputError

REWARD_HELP = (
    "rule:NAME (built-in, e.g. rule:accuracy), rule:file.py:func (your function) or rm:PATH (a reward model dir)"
)


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
    refused here; online-dpo takes a judge through its own `--judge` flags (`build_judge`).
    """
    from alignctl.rewards import resolve_source

    if not specs:
        if required:
            raise InputError(f"give at least one --reward: {REWARD_HELP}")
        return []
    return [resolve_source(_as_spec(spec), trust_remote_code=trust_remote_code) for spec in specs]


class ScoreReward:
    """A pointwise reward source (e.g. a reward model) with TRL's reward-function signature.

    TRL could score a reward model itself; going through the source's `score` keeps one scorer
    for `label`, `grpo`, `online-dpo`, `ppo` and `eval` (same chat template, truncation, batching).
    """

    def __init__(self, source, name: str) -> None:
        self.source = source
        self.__name__ = name

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        from alignctl.rewards import score_columns

        return score_columns(self.source, prompts, completions, kwargs)


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


def check_weights(weights: list[float] | None, n_sources: int) -> None:
    """`reward_weights` (parsed from `--reward-weights 1,0.5` by domains.coerce) must match the sources."""
    if weights is not None and len(weights) != n_sources:
        raise InputError(
            f"--reward-weights has {len(weights)} value{'s' if len(weights) != 1 else ''} "
            f"for {n_sources} reward source{'s' if n_sources != 1 else ''}; give one weight per --reward"
        )


# ---------------------------------------------------------------------------------------------
# A pairwise judge for online DPO


class JudgeReward:
    """A pairwise judge as a reward function for TRL's OnlineDPOTrainer (which has no judge argument).

    How TRL 1.16 uses it: each step samples two answers per prompt and calls every reward
    function once with `prompts = batch + batch` and `completions = first answers + second
    answers`, so completion `i` and completion `i + B` answer the same prompt (B = the batch).
    It then sums the weighted rewards and keeps as chosen the answer with the higher reward, the
    first one on a tie. This function asks the judge about each pair (i, i + B), in both orders
    (`PairwiseJudge`), and returns 1.0 to the winner and 0.0 to the loser, or 0.5 to both on a
    tie (the two orders disagreed, or a reply held no clear letter). So TRL's chosen answer is
    exactly the judge's pick; a tie gives a zero score margin and TRL's first-answer default.
    Every verdict is appended to `log_path` (JSONL) when given.
    """

    __name__ = "judge"

    def __init__(self, judge, log_path: Path | None = None) -> None:
        self.judge = judge
        self.log_path = log_path
        self.pairs = 0
        self.ties = 0
        self.calls = 0

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        n = len(completions)
        if n % 2 or len(prompts) != n:
            raise AlignctlError(f"judge reward: expected two answers per prompt, got {len(prompts)} / {n}")
        half = n // 2
        rewards = [0.5] * n
        rows = []
        verdicts = self.judge.judge_many(prompts[:half], list(zip(completions[:half], completions[half:], strict=True)))
        for i, verdict in enumerate(verdicts):
            if verdict.winner is not None:
                rewards[i], rewards[i + half] = (1.0, 0.0) if verdict.winner == 0 else (0.0, 1.0)
            else:
                self.ties += 1
            rows.append(
                {
                    "call": self.calls,
                    "prompt": prompts[i],
                    "completions": [completions[i], completions[i + half]],
                    "rewards": [rewards[i], rewards[i + half]],
                    "verdict": verdict.to_dict(),
                }
            )
        self.pairs += half
        self.calls += 1
        if self.log_path is not None:
            from alignctl import io

            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.writelines(io.dumps(r) + "\n" for r in rows)
        return rewards

    def stats(self) -> dict[str, float]:
        return {"judge_pairs": self.pairs, "judge_tie_rate": self.ties / self.pairs if self.pairs else 0.0}


def build_judge(
    judge: str | None,
    judge_url: str | None,
    judge_model: str | None,
    judge_template: Path | None = None,
    judge_key_env: str = "OPENAI_API_KEY",
    trust_remote_code: bool = False,
):
    """The `PairwiseJudge` the flags name (as `label --by judge:...` builds it), or None. Loads no model."""
    from alignctl.rewards import resolve_source

    if judge is None and judge_url is None:
        if judge_model or judge_template:
            raise InputError("--judge-model / --judge-template need --judge-url (or --judge MODEL)")
        return None
    source = resolve_source(
        f"judge:{judge}" if judge else "judge",
        judge_url=judge_url,
        judge_model=judge_model,
        judge_key_env=judge_key_env,
        judge_template=judge_template,
        trust_remote_code=trust_remote_code,
    )
    return source.judge
