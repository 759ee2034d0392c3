"""The QA task's rules: a completion checked against a reference column (`answer` by default).

Answer extraction (the last `\\boxed{}` or number, GSM8K's `#### answer`), number parsing and
matching, and the built-in rules built on them: `accuracy`, `contains`, `qa` (graded, the demo
task's training reward) and `qa_strict` (pass/fail, its eval metric). `rules.py` lists them with
the generic rules and loads them from a spec.
"""

from __future__ import annotations

import numbers
import re
import unicodedata
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from alignctl.errors import AlignctlError, InputError
from alignctl.io import has_cjk, text_length
from alignctl.rewards import TRAINER_KWARGS
from alignctl.rewards.text import completion_text


def _fold(text: str) -> str:
    """Case- and accent-insensitive form, so `Brasilia` matches `Brasília`."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def acceptable(value: Any) -> list[str]:
    """An `answer` cell as a list of acceptable strings (a string, a number, or a list of them)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


def contains_word(text: str, phrase: str) -> bool:
    """`phrase` occurs in `text` as whole words (case/accent-insensitive, any inner whitespace).

    Chinese has no spaces between words, so a phrase that starts or ends with a CJK character
    needs no word boundary on that side ("北京" in "首都是北京。"); a Latin word still does.
    """
    words = _fold(phrase).split()
    if not words:
        return False
    left = "" if has_cjk(words[0][0]) else r"(?<!\w)"
    right = "" if has_cjk(words[-1][-1]) else r"(?!\w)"
    between = r"\s*" if has_cjk(phrase) else r"\s+"  # "北京 大学" matches "北京大学"
    pattern = left + between.join(re.escape(w) for w in words) + right
    return re.search(pattern, _fold(text)) is not None


# --------------------------------------------------------------------------- answer extraction

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?|[-+]?\.\d+")
_FRAC = re.compile(r"\\d?frac\{([^{}]+)\}\{([^{}]+)\}")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (nested braces allowed), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def parse_number(text: str) -> float | None:
    """A number written as `1,234`, `-0.5`, `3/4`, `\\frac{3}{4}`, `$12`, `50%` or `1e3`; else None."""
    s = _FRAC.sub(r"(\1)/(\2)", text.strip())
    s = s.replace("$", "").replace("\\!", "").replace("\\,", "").replace("%", "").strip()
    s = s.rstrip(".").replace("(", "").replace(")", "")
    if not _NUMBER.fullmatch(s):
        return None
    try:
        return float(Fraction(s.replace(",", "").replace(" ", "")))
    except (ValueError, ZeroDivisionError):
        return None


def _last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def _normalize(text: str) -> str:
    s = _fold(text).replace("$", "")
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = " ".join(s.split())
    return s.strip(" .,;:!?\"'`*。、")  # NFKD already made full-width ？！： ASCII


def _gold_text(gold: Any) -> str:
    text = str(gold)
    # GSM8K-style solutions end with "#### <final answer>".
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    boxed = last_boxed(text)
    return boxed if boxed is not None else text


def answers_match(completion: str, gold: Any, tolerance: float = 1e-6) -> bool:
    """Accuracy against one gold answer.

    The prediction is the last `\\boxed{...}` in the completion; failing that, its last number when
    the gold answer is numeric, else the whole completion. Two numbers match within
    `tolerance * max(1, |gold|)`; anything else compares as case/space/punctuation-normalized text.
    """
    gold_str = _gold_text(gold)
    gold_num = float(gold) if isinstance(gold, numbers.Real) else parse_number(gold_str)
    predicted = last_boxed(completion)
    if predicted is None:
        predicted = _last_number(completion) if gold_num is not None else completion
    if predicted is None:
        return False
    pred_num = parse_number(predicted)
    if gold_num is not None and pred_num is not None:
        return abs(pred_num - gold_num) <= tolerance * max(1.0, abs(gold_num))
    return _normalize(predicted) == _normalize(gold_str) != ""


# --------------------------------------------------------------------------- rules


def _column(rule: str, columns: Mapping[str, Any], name: str, n: int) -> list[Any]:
    if name not in columns:
        present = sorted(k for k in columns if k not in TRAINER_KWARGS)
        raise InputError(
            f"rule:{rule} needs the `{name}` column in the prompts file "
            f"(columns present: {', '.join(present) or 'none'})"
        )
    values = list(columns[name])
    if len(values) != n:
        raise AlignctlError(f"rule:{rule}: `{name}` has {len(values)} values for {n} completions")
    return values


def _golds(rule: str, columns: Mapping[str, Any], name: str, n: int) -> list[list[str]]:
    golds = []
    for i, cell in enumerate(_column(rule, columns, name, n)):
        ok = acceptable(cell)
        if not ok:
            raise InputError(f"rule:{rule}: row {i} has an empty `{name}`; nothing to compare against")
        golds.append(ok)
    return golds


def brevity(words: int, target: int, decay: float) -> float:
    """1.0 up to `target` words, then linear down to 0.0 at `target + decay` words."""
    return 1.0 if words <= target else max(0.0, 1.0 - (words - target) / decay)


def accuracy(
    prompts: list,
    completions: list,
    *,
    column: str = "answer",
    tolerance: float = 1e-6,
    **columns: Any,
) -> list[float]:
    """1.0 when the completion's final answer equals the `answer` column (see `answers_match`)."""
    texts = [completion_text(c) for c in completions]
    golds = _golds("accuracy", columns, column, len(texts))
    rewards = [float(any(answers_match(t, g, tolerance) for g in gold)) for t, gold in zip(texts, golds, strict=True)]
    return rewards


def contains(
    prompts: list,
    completions: list,
    *,
    column: str = "answer",
    **columns: Any,
) -> list[float]:
    """1.0 when an acceptable `answer` occurs anywhere in the completion, ignoring case."""
    texts = [completion_text(c) for c in completions]
    golds = _golds("contains", columns, column, len(texts))
    return [float(any(_fold(g) in _fold(t) for g in gold)) for t, gold in zip(texts, golds, strict=True)]


def _qa_parts(rule: str, completions: list, column: str, columns: Mapping[str, Any]) -> list[tuple[bool, int]]:
    texts = [completion_text(c) for c in completions]
    golds = _golds(rule, columns, column, len(texts))
    return [(any(contains_word(t, g) for g in gold), text_length(t)) for t, gold in zip(texts, golds, strict=True)]


def qa(
    prompts: list,
    completions: list,
    *,
    column: str = "answer",
    max_words: int = 12,
    decay_words: int = 24,
    **columns: Any,
) -> list[float]:
    """The demo task's graded reward (examples/qa): 0.6 * correct + 0.4 * brief.

    correct: an acceptable `answer` appears as whole words (case-insensitive). brief: 1.0 at or
    under `max_words` words, then linear down to 0.0 at `max_words + decay_words`. The partial
    credit gives GRPO a gradient and `label` an ordering among samples that are all wrong or all
    right; `qa_strict` is the pass/fail metric reported by eval.
    """
    return [
        0.6 * correct + 0.4 * brevity(words, max_words, decay_words)
        for correct, words in _qa_parts("qa", completions, column, columns)
    ]


def qa_strict(
    prompts: list,
    completions: list,
    *,
    column: str = "answer",
    max_words: int = 12,
    **columns: Any,
) -> list[float]:
    """1.0 when the answer is correct (as in `qa`) and at most `max_words` words, else 0.0."""
    return [
        float(correct and words <= max_words) for correct, words in _qa_parts("qa_strict", completions, column, columns)
    ]
