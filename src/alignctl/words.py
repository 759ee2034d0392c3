"""How long a text is, in words, where a CJK character counts as one: Chinese (the chapter's
language) puts no spaces between words, so splitting on whitespace would count a sentence as one.
Used for answer lengths in eval, label's summaries, validate, and the rules that reward brevity."""

from __future__ import annotations

import re

# scripts written without spaces between words (Chinese, Japanese kana): one character, one word;
# their punctuation (、。「」，：？ ...) separates words and is none itself
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_CJK_PUNCT = re.compile(r"[\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]")


def text_length(value: str | list[dict]) -> int:
    """Length in words (a message list: all its contents), each CJK character counting as one word."""
    text = value if isinstance(value, str) else "\n".join(str(m.get("content", "")) for m in value)
    return len(_CJK.findall(text)) + len(_CJK.sub(" ", _CJK_PUNCT.sub(" ", text)).split())


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None
