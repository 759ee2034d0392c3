"""How a rule reads prompts and completions: plain strings, or message lists (the last assistant turn)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal content parts: [{"type": "text", "text": ...}]
        return "".join(part.get("text", "") if isinstance(part, Mapping) else str(part) for part in content)
    return str(content)


def completion_text(completion: Any) -> str:
    """The text to score: the string itself, or the last assistant message's content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return _content_text(completion.get("content"))
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, Mapping)]
        for message in reversed(messages):
            if message.get("role", "assistant") == "assistant":
                return _content_text(message.get("content"))
        return _content_text(messages[-1].get("content")) if messages else ""
    return str(completion)


def prompt_text(prompt: Any) -> str:
    """A prompt as one string: the text itself, a lone user turn's content, or `role: content` lines."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Mapping):
        return _content_text(prompt.get("content"))
    messages = [m for m in prompt if isinstance(m, Mapping)]
    if len(messages) == 1:
        return _content_text(messages[0].get("content"))
    return "\n\n".join(f"{m.get('role', 'user')}: {_content_text(m.get('content'))}" for m in messages)


def word_count(text: str) -> int:
    return len(text.split())
