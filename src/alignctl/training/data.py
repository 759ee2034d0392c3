"""The records each kind of TRL trainer trains on, read from the user's file (`TRLTrainer.records`).

Every reader checks the whole file first (`io.load`: `file:line: what is wrong`, before any model
loads) and keeps only the fields TRL reads, in TRL's names:

- `preferences` (train-rm, dpo, orpo, simpo): `prompt`, `chosen`, `rejected`, any of the three
  shapes of docs/formats.md;
- `unpaired` (kto): `prompt`, `completion`, `label`; a preference file is unpaired as TRL does it
  (chosen -> true, rejected -> false);
- `prompts` (grpo, online-dpo, rloo): the prompts with their extra columns (the rewards read them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alignctl import io

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


def read_prompts(path: str | Path, split: str | None = None) -> list[dict]:
    from alignctl.prompts import read_prompts as read

    return read(path, split)


READERS: dict[str, Reader] = {
    "preferences": read_prefs,
    "unpaired": read_unpaired,
    "prompts": read_prompts,
}
