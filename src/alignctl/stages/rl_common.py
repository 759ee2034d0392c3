"""What the online stages (`grpo`, `online-dpo`, `ppo`) share: prompt preparation.

Their reward adapters are in `alignctl.rewards.trl_adapters`; gradient checkpointing on CPU
in `alignctl.training.adjust_checkpointing`.
"""

from __future__ import annotations

import copy
from pathlib import Path

from alignctl.console import note
from alignctl.errors import InputError


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


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None
