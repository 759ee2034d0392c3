"""What the pairwise judge says to a model and how its reply is read: the prompt templates (the
neutral default, its Chinese form for Chinese questions, and `concise`), template checks and
rendering, and `parse_verdict` (the letter A or B in a free-form reply, English or Chinese)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from alignctl.errors import InputError
from alignctl.files import read_text

PLACEHOLDERS = ("prompt", "answer_a", "answer_b")
#: how a verdict is read: auto = next-token scores of A/B for a local judge on the default
#: template, generation (parsed) otherwise
VERDICT_BY = ("auto", "scores", "generate")

_HEAD = """\
You are judging two answers to the same question.

Question:
{prompt}

Answer A:
{answer_a}

Answer B:
{answer_b}

"""

#: Judge prompts by name (`--judge-template NAME`). Each shows the question and the two answers
#: labelled A and B and asks for one letter, which keeps replies short (max_tokens can stay small)
#: and easy to parse. "neutral" (the default) asks what the chapter's labellers are asked: the
#: better answer, helpful, correct and harmless; it names no length preference, so a judge is not
#: told to favour short answers. "concise" adds brevity, for tasks whose reward wants it. A custom
#: template is any text containing {prompt}, {answer_a} and {answer_b}; other braces are left
#: alone, so JSON examples inside a template need no escaping.
TEMPLATES = {
    "neutral": _HEAD + "Which answer is better: more helpful, more correct, and harmless? "
    "Judge the content, not the length or the order of the answers. Reply with a single letter: A or B.",
    "concise": _HEAD + "Which answer is better: more correct, more helpful, and more concise? "
    "Reply with a single letter: A or B.",
}
DEFAULT_TEMPLATE = TEMPLATES["neutral"]

#: The default prompt for a question in Chinese (the chapter's language): the same question in
#: the language of the answers, since a judge reads answers best when asked in their language.
DEFAULT_TEMPLATE_ZH = """\
你在评判同一个问题的两个回答。

问题：
{prompt}

回答 A：
{answer_a}

回答 B：
{answer_b}

哪个回答更好：更正确、更有帮助、更简洁？只回复一个字母：A 或 B。"""

_PLACEHOLDER = re.compile(r"\{(prompt|answer_a|answer_b)\}")


def check_template(template: str, source: str = "judge template") -> str:
    """Return `template` if it has all three placeholders, else raise InputError naming `source`."""
    missing = [name for name in PLACEHOLDERS if "{" + name + "}" not in template]
    if missing:
        raise InputError(
            f"{source}: missing placeholder(s) {', '.join('{' + m + '}' for m in missing)}; "
            "a judge template needs {prompt}, {answer_a} and {answer_b}"
        )
    return template


def load_template(path: str | Path) -> str:
    """A named template (TEMPLATES) unless a file of that name exists, else read and check a
    template file (UTF-8)."""
    p = Path(path)
    if str(path) in TEMPLATES and not p.is_file():
        return TEMPLATES[str(path)]
    return check_template(read_text(p, "judge template"), str(path))


def render(template: str, prompt: str, answer_a: str, answer_b: str) -> str:
    """Fill the placeholders in one pass, so text inside an answer is never substituted again."""
    values = {"prompt": prompt, "answer_a": answer_a, "answer_b": answer_b}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


# --------------------------------------------------------------------------- reply parsing

_WHOLE = re.compile(r"^[\s\"'(\[{<]*(?:option|answer|response)?\s*([AaBb])[\s\"').\]}>:!]*$", re.I)
_DOUBLE_BRACKET = re.compile(r"\[\[([AB])\]\]")
_VERDICT = re.compile(
    r"(?i:\b(?:final\s+)?(?:answer|verdict|choice|winner|decision)\s*(?:is|:|=|-)\s*)"
    r"(?i:(?:answer|response|option)\s+)?\(?([AB])(?![A-Za-z0-9])"
)
_NAMED = re.compile(r"(?i:\b(?:answer|response|option|output)\s*)\(?([AB])(?![A-Za-z0-9])")
# Chinese verdicts: "选B", "答案是 A", "更好的是回答B", "B更好", "回答A胜出"
_VERDICT_ZH = re.compile(
    r"(?:选择?|答案是|结论是|更好的是|胜出的是|获胜的是|最终答案[是为]?)\s*:?\s*(?:回答|答案|选项)?\s*([AB])(?![A-Za-z0-9])"
    r"|(?<![A-Za-z0-9])(?:回答|答案|选项)?\s*([AB])\s*(?:更好|更优|更佳|更正确|更准确|更简洁|更有帮助|较好|胜出|获胜)"
)
_STANDALONE = re.compile(r"(?<![A-Za-z0-9])([AB])(?![A-Za-z0-9])")
# After a standalone "A", these words mean the letter names an answer ("A is better"); any other
# lowercase word means it is the article ("A better answer is B").
_VERBS = frozenset(
    "is was wins won seems looks provides gives has does answers offers states correctly clearly directly".split()
)


def parse_verdict(reply: str) -> str | None:
    """Read "A" or "B" out of a judge's reply; None when there is no clear letter.

    In order: a reply that is just the letter (`B`, `(A).`, `**Answer B**`); MT-Bench's `[[A]]`;
    a verdict phrase (`Final answer: B`, `My choice is A`); the first `Answer A`/`Response B`;
    the first standalone capital A or B that is not the article ("A better answer is B" -> B).
    Chinese replies too: `答案是B`, `A更好`, full-width `Ｂ`.
    """
    # NFKC: full-width letters and colons (Ａ, ：) as a Chinese reply writes them become ASCII
    text = re.sub(r"[*_`#]", "", unicodedata.normalize("NFKC", reply)).strip()
    for pattern in (_WHOLE, _DOUBLE_BRACKET, _VERDICT, _VERDICT_ZH, _NAMED):
        match = pattern.search(text)
        if match:
            return next(g for g in match.groups() if g).upper()
    for match in _STANDALONE.finditer(text):
        letter = match.group(1)
        if letter == "A":
            following = re.match(r"\s+([a-z]+)", text[match.end() :])
            if following and following.group(1) not in _VERBS:
                continue
        return letter
    return None


# --------------------------------------------------------------------------- the judge
