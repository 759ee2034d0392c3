"""The records each kind of TRL trainer trains on, read from the user's file (`TRLTrainer.records`).

Every reader checks the whole file first (`io.load`: `file:line: what is wrong`, before any model
loads) and keeps only the fields TRL reads, in TRL's names:

- `preferences` (train-rm, dpo, orpo, simpo): `prompt`, `chosen`, `rejected`, any of the three
  shapes of docs/formats.md;
- `unpaired` (kto): `prompt`, `completion`, `label`; a preference file is unpaired as TRL does it
  (chosen -> true, rejected -> false);
- `completions` (sft): `prompt`, `completion` (TRL's prompt-completion shape, so the loss can cover
  the answers only); a conversation `{"messages": [...]}` is split before its last turn, the answer
  trained on (earlier answers are context); with `from_prefs` a preference file's chosen answers;
- `prompts` (grpo, online-dpo, rloo): the prompts with their extra columns (the rewards read them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alignctl import io
from alignctl.errors import InputError

Reader = Callable[..., list[dict]]


def read_prefs(path: str | Path, split: str | None = None) -> list[dict]:
    """Preference records trimmed to the fields a preference trainer (or a reward model) trains on."""
    records = io.load(path, "preferences", split=split)
    return [{k: r[k] for k in ("prompt", "chosen", "rejected") if k in r} for r in records]


def read_unpaired(path: str | Path, split: str | None = None) -> list[dict]:
    """Unpaired records (one answer marked good or bad), or a preference file unpaired."""
    records = io.load(path, ("unpaired", "preferences"), split=split)
    if records and "completion" in records[0]:
        return [{k: r[k] for k in ("prompt", "completion", "label")} for r in records]
    return [u for r in records for u in io.unpair(r)]


def read_completions(path: str | Path, split: str | None = None, *, from_prefs: bool = False) -> list[dict]:
    """Prompt + answer records, or with `from_prefs` the chosen answer of each preference pair (the
    Llama 3 round's rejection-sampling fine-tuning: the best of several samples becomes SFT data)."""
    records = io.load(path, ("preferences",) if from_prefs else ("completions", "preferences"), split=split)
    if records and "chosen" in records[0]:
        if not from_prefs:
            raise InputError(f"{path}: holds preference pairs; --from-prefs fine-tunes on their chosen answers")
        return [{"prompt": u["prompt"], "completion": u["completion"]} for r in records for u in io.unpair(r)[:1]]
    return [prompt_completion(r) for r in records]


def prompt_completion(rec: dict) -> dict:
    """A completions record as TRL's prompt-completion: a conversation split before its last turn."""
    if "completion" not in rec:
        return {"prompt": rec["messages"][:-1], "completion": rec["messages"][-1:]}
    return {"prompt": rec["prompt"], "completion": rec["completion"]}


def read_prompts(path: str | Path, split: str | None = None) -> list[dict]:
    from alignctl.prompts import read_prompts as read

    return read(path, split)


READERS: dict[str, Reader] = {
    "preferences": read_prefs,
    "unpaired": read_unpaired,
    "completions": read_completions,
    "prompts": read_prompts,
}
