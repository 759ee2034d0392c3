"""How a prompt becomes model input: one rule for every stage that feeds prompts to a model.

A prompt is plain text or a list of chat messages (`{"role": ..., "content": ...}`).

- A message list goes through the tokenizer's chat template with the generation prompt (the
  assistant header the answer follows); a tokenizer without a template is an error.
- Plain text goes through the template as one user message when the tokenizer has one and
  `chat_template` is on (the default): an instruct model reads a raw question as a text to
  continue, not a question to answer. With `chat_template` off, or no template, the text is
  tokenized as it is, with the tokenizer's special tokens (e.g. BOS).
- `max_prompt_length` counts the tokens of that rendered prompt, template markup and special
  tokens included: what the model is fed. A longer prompt is cut from the left, so its end (where
  the question usually is) stays; text leaves its earliest message first, so the roles and the
  template's markup stay too. Each cut is counted in one printed line; `--strict` rejects instead.

Who uses what: `collect`, `eval` and the local judge sample through `alignctl.generation`, whose
backends render with `Encoder`; `grpo`, `online-dpo` and `ppo` turn their prompt records into
this form with `prepare` (TRL renders message lists with the same template call; ppo takes
`prompt_ids`); `label` writes preference records in the form the answers were sampled under
(`training_form`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alignctl import io
from alignctl.console import note
from alignctl.errors import InputError, ModelError


def has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def as_messages(prompt: str | list[dict]) -> list[dict]:
    """A plain-text prompt as the one user message of a conversation; a message list as it is."""
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def uses_template(tokenizer, prompt: str | list[dict], chat_template: bool | None = None) -> bool:
    """Whether `prompt` reaches the model through the chat template (`render`'s rule)."""
    return isinstance(prompt, list) or (has_template(tokenizer) and chat_template is not False)


def render(
    tokenizer, prompt: str | list[dict], chat_template: bool | None = None, *, name: str = "model"
) -> tuple[list[int], bool]:
    """(token ids the model is fed for `prompt`, whether they went through the chat template).

    `chat_template`: None uses the tokenizer's template for plain text when it has one, False
    sends plain text raw, True demands a template. `name` (the model) prefixes errors.
    """
    if chat_template and not has_template(tokenizer):
        raise ModelError(f"{name}: chat_template is on but the tokenizer has no chat template")
    if not uses_template(tokenizer, prompt, chat_template):
        return tokenizer(prompt, add_special_tokens=True)["input_ids"], False
    if not has_template(tokenizer):
        raise ModelError(
            f"{name}: prompts are message lists but the tokenizer has no chat template",
            hint="use plain-text prompts, or a chat model",
        )
    text = tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)
    # the template writes any BOS itself; adding special tokens again would double it
    return tokenizer(text, add_special_tokens=False)["input_ids"], True


class Encoder:
    """`render` for one tokenizer and chat-template setting, checked once, cached per prompt key
    (a generation backend encodes each prompt when it plans batches and again when it runs them)."""

    def __init__(self, tokenizer, chat_template: bool | None, name: str) -> None:
        if chat_template and not has_template(tokenizer):
            raise ModelError(f"{name}: chat_template is on but the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.name = name
        self._cache: dict[str, tuple[list[int], bool]] = {}

    def encode(self, key: str, prompt: str | list[dict]) -> tuple[list[int], bool]:
        if key not in self._cache:
            self._cache[key] = render(self.tokenizer, prompt, self.chat_template, name=self.name)
        return self._cache[key]

    def uses_template(self, prompt: str | list[dict]) -> bool:
        return uses_template(self.tokenizer, prompt, self.chat_template)


# ---------------------------------------------------------------------------------------------
# Prompt records for the trainers (grpo, online-dpo, ppo)


def read_prompts(path: str | Path, split: str | None = None) -> list[dict]:
    """Prompt records with every extra column kept (TRL hands them to reward functions)."""
    return [dict(r) for r in io.load(path, "prompts", split=split)]


def apply_chat_format(records: list[dict], tokenizer, *, enabled: bool, path: str | Path) -> None:
    """Make prompts uniform for TRL, in place: `render`'s rule written into the records.

    TRL applies the chat template only to message-list prompts and feeds plain strings to the
    model raw, so with `chat_template` on (the default) and a tokenizer that has a template, each
    plain-text prompt becomes one user message, with one printed line saying so.
    """
    plain = [r for r in records if isinstance(r["prompt"], str)]
    n_conv = len(records) - len(plain)
    if n_conv and not has_template(tokenizer):
        raise InputError(f"{path}: prompts are message lists but the model's tokenizer has no chat template")
    if plain and has_template(tokenizer) and enabled:
        for r in plain:
            r["prompt"] = as_messages(r["prompt"])
        note(
            f"{len(plain)} plain-text prompt{'s' if len(plain) != 1 else ''} sent as user messages through the "
            "model's chat template (--set chat_template=false sends raw text)"
        )
    elif plain and n_conv:
        raise InputError(f"{path}: mixes plain-text and message-list prompts; use one kind per file")


def prompt_ids(tokenizer, prompt: str | list[dict]) -> list[int]:
    """Token ids of a prompt as `apply_chat_format` left it: a message list through the template,
    a string as it is (its chat-template choice was made there)."""
    return render(tokenizer, prompt, chat_template=False)[0]


def prompt_tokens(tokenizer, prompt: str | list[dict]) -> int:
    """The length `max_prompt_length` limits: tokens of the rendered prompt, specials included."""
    return len(prompt_ids(tokenizer, prompt))


def _drop_front(tokenizer, text: str, n: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[n:]) if n < len(ids) else ""


def truncate_left(tokenizer, prompt: str | list[dict], limit: int) -> str | list[dict]:
    """`prompt` cut from the left until its rendered form fits in `limit` tokens; its end is kept.

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


def fit_prompts(records: list[dict], tokenizer, limit: int | None, *, strict: bool | None, path: str | Path) -> int:
    """Apply `max_prompt_length` (TRL 1.16 dropped it): cut longer prompts from the left, in place,
    or reject them with `strict`. `strict=None`: the stage has no --strict (the note says nothing of it).

    Returns the number of prompts cut. The chapter's GRPO command caps prompts at 512 tokens
    ("强化学习 GRPO 训练": --max_prompt_length 512); cutting from the left keeps the end of the
    prompt, where the question usually is.
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
        f"truncated {len(over)} of {len(records)} prompts to max_prompt_length={limit} tokens, from the left"
        + (" (--strict rejects them instead)" if strict is not None else "")
    )
    return len(over)


def prepare(
    records: list[dict], tokenizer, settings: Mapping[str, Any], *, strict: bool | None, path: str | Path
) -> int:
    """Prompt records as a trainer feeds them to the model, in place: the chat-template rule
    (`settings["chat_template"]`), then `settings["max_prompt_length"]` in rendered tokens.
    Returns the number of prompts cut."""
    apply_chat_format(records, tokenizer, enabled=settings["chat_template"], path=path)
    return fit_prompts(records, tokenizer, settings["max_prompt_length"], strict=strict, path=path)


def prompts_dataset(records: list[dict], path: str | Path):
    """A `datasets.Dataset`; columns whose types differ between lines are an InputError, not a crash."""
    from datasets import Dataset

    try:
        return Dataset.from_list(records)
    except (TypeError, ValueError) as exc:  # pyarrow's ArrowInvalid / ArrowTypeError subclass these
        raise InputError(f"{path}: a column has values of different types on different lines ({exc})") from None


# ---------------------------------------------------------------------------------------------
# Preference records (label)


def training_form(rec: dict) -> tuple[Any, list]:
    """(prompt, completions) of a candidates record as training will see them: conversational
    when the answers were sampled through a chat template (message prompts, message completions
    or `generator.chat_template`), so training renders the prompt the way sampling did."""
    prompt, comps = rec["prompt"], rec["completions"]
    chat = (
        isinstance(prompt, list)
        or any(isinstance(c, list) for c in comps)
        or bool((rec.get("generator") or {}).get("chat_template"))
    )
    if not chat:
        return prompt, list(comps)
    return as_messages(prompt), [c if isinstance(c, list) else [{"role": "assistant", "content": c}] for c in comps]
