"""Eval's answer cache: a model's answers to a prompts file, kept under
`$ALIGNCTL_HOME/cache/generations/` and keyed by the model's fingerprint, the prompts and the
sampling settings, so `iterate` evaluates each round's baseline (the previous round's model)
without generating its answers again."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alignctl import io
from alignctl.console import info
from alignctl.errors import OutputError

# the settings that change the answers (batch_size too: padded shapes can flip a near-tie token)
KEY_SETTINGS = ("temperature", "top_p", "top_k", "max_new_tokens", "seed", "batch_size", "backend", "chat_template")


def model_fingerprint(model_path: str) -> dict[str, Any]:
    """What identifies a model's weights: its manifest hash (alignctl runs) plus the weight files'
    sizes and mtimes (any dir: a dir whose config did not change may still have new weights)."""
    from alignctl import runs

    fp: dict[str, Any] = dict(runs.input_fingerprint(model_path))
    p = Path(model_path)
    if p.is_dir():
        fp["files"] = sorted(
            (f.name, f.stat().st_size, f.stat().st_mtime_ns)
            for f in p.iterdir()
            if f.is_file() and f.suffix in (".safetensors", ".bin", ".gguf", ".pt")
        )
    return fp


def cache_dir() -> Path:
    from alignctl.models import alignctl_home

    return alignctl_home() / "cache" / "generations"


def generation_key(model_path: str, records: list[dict], settings: Mapping[str, Any]) -> str:
    blob = {
        "model": model_fingerprint(model_path),
        "prompts": [[r["id"], r["prompt"]] for r in records],
        "settings": {k: settings[k] for k in KEY_SETTINGS},
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:32]


class AnswerCache:
    """One answer per prompt record of `records`, for one model and one set of settings."""

    def __init__(self, model_path: str, records: list[dict], settings: Mapping[str, Any]) -> None:
        self.ids = [r["id"] for r in records]
        self.path = cache_dir() / f"{generation_key(model_path, records, settings)}.jsonl"

    def read(self) -> list[str] | None:
        """The cached answers in record order, or None (no entry, or one that does not match)."""
        if not self.path.is_file():
            return None
        try:
            rows = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, ValueError):
            return None
        if [r.get("id") for r in rows] != self.ids or not all(isinstance(r.get("text"), str) for r in rows):
            return None
        return [r["text"] for r in rows]

    def write(self, texts: list[str]) -> None:
        try:
            io.write_jsonl(self.path, ({"id": i, "text": t} for i, t in zip(self.ids, texts, strict=True)))
        except OutputError as exc:  # a cache we cannot write is not worth failing the eval for
            info(f"generation cache not written: {exc}")
