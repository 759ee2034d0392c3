"""How each stage backed by a TRL trainer runs on the tiny model in the shared tests (the training time
budget, two ranks under torchrun, the bad-input corpus): the input files `write_inputs` puts in a
directory, and the arguments that read them with sizes that make a step take a fraction of a second.

One entry per stage that declares a `TRAINER`: `tests/test_layout.py` checks the table against the
registry, so a new method cannot be left out of the shared tests, and a new method adds its line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tiny import toy_preferences, write_jsonl

WORDS = ("paris", "rome", "the sky", "the sun", "tokyo", "the cat", "a dog", "berlin")
PROMPTS = [{"prompt": f"Is {w} good?"} for w in WORDS]
SHORT_RULE = "def short(prompts, completions, **kw):\n    return [-len(c) / 10 for c in completions]\n"


@dataclass(frozen=True)
class Case:
    data: str  # the input file the stage reads (written by write_inputs)
    args: tuple[str, ...]  # the stage's input options and quick sizes (no --model, -o, --max-steps)
    torchrun: bool = False  # also run under torchrun with two ranks (tests/test_distributed.py)


CASES: dict[str, Case] = {
    "sft": Case("sft.jsonl", ("--data", "sft.jsonl", "--batch-size", "2"), torchrun=True),
    "train-rm": Case("prefs.jsonl", ("--data", "prefs.jsonl", "--batch-size", "2"), torchrun=True),
    "dpo": Case("prefs.jsonl", ("--data", "prefs.jsonl", "--batch-size", "2"), torchrun=True),
    "kto": Case("prefs.jsonl", ("--data", "prefs.jsonl", "--batch-size", "4")),
    "orpo": Case("prefs.jsonl", ("--data", "prefs.jsonl", "--batch-size", "2"), torchrun=True),
    "simpo": Case("prefs.jsonl", ("--data", "prefs.jsonl", "--batch-size", "2"), torchrun=True),
    "grpo": Case(
        "p.jsonl",
        ("--prompts", "p.jsonl", "--reward", "rule:rules.py:short", "--num-generations", "2", "--batch-size", "2")
        + ("--max-completion-length", "4"),
        torchrun=True,
    ),
    "rloo": Case(
        "p.jsonl",
        ("--prompts", "p.jsonl", "--reward", "rule:rules.py:short", "--num-generations", "2", "--batch-size", "2")
        + ("--max-completion-length", "4"),
        torchrun=True,
    ),
    "online-dpo": Case(
        "p.jsonl", ("--prompts", "p.jsonl", "--reward", "rule:length?target=3", "--batch-size", "2")
        + ("--max-new-tokens", "4"),
    ),
}  # fmt: skip


def write_inputs(directory: Path) -> None:
    """Every input file a case reads: prompts with answers, preference pairs, prompts, a rule file."""
    answers = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in toy_preferences(8)]
    write_jsonl(directory / "sft.jsonl", answers)
    write_jsonl(directory / "prefs.jsonl", toy_preferences(8))
    write_jsonl(directory / "p.jsonl", PROMPTS[:4])
    (directory / "rules.py").write_text(SHORT_RULE)


def trl_stages() -> set[str]:
    """The registered stages that declare a TRL trainer: the table must name exactly these."""
    from alignctl import stages

    return {s.name for s in stages.REGISTRY if getattr(stages.load(s.name), "TRAINER", None) is not None}
