"""Data records: their shapes, the checks that name `path:line`, and the text helpers.

What a record must look like (docs/design.md, "Data contracts"); where records come from (JSONL,
Parquet, JSON arrays, saved or hub datasets) is `readers`, writing is `files` (re-exported here).
Field names are TRL's, so TRL-format files feed alignctl and alignctl's files feed TRL.

- prompts:     {"prompt": str | [messages], "id"?: str, <extra columns>}
- candidates:  {"id", "prompt", "completions": [str | [messages]], <extra columns>, "generator": {...},
                "scores"?: [float]}
- preferences: {"chosen", "rejected"} (implicit prompt; strings or message lists) or
               {"prompt", "chosen", "rejected"} (explicit prompt), + optional score_chosen,
               score_rejected, label. A record whose chosen/rejected are whole conversations
               repeating the prompt's turns (UltraFeedback-binarized, Tulu 3) is normalised on
               read: the prompt is those turns, the answers what follows (`split_conversation`).
- unpaired:    {"prompt", "completion", "label": bool} (KTO); completions: {"prompt", "completion"}
               or {"messages": [..., assistant turn]} (SFT).

Deliberate choices for odd-but-harmless input (docs/formats.md): a UTF-8 BOM and CRLF line ends
are accepted with one warning each; blank lines are skipped. Everything else that is wrong is an
`InputError` naming `path:line` (`path: row N` for tables), raised before any model loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from pathlib import Path
from typing import Any

from alignctl.console import info, warn
from alignctl.errors import InputError
from alignctl.files import (  # noqa: F401 (io's writing names, kept for the stages that use them)
    Appender,
    atomic_path,
    dumps,
    read_journal,
    sha256_file,
    write_json,
    write_jsonl,
)
from alignctl.readers import Problem, ReadResult, rows  # noqa: F401 (Problem: part of io's API)
from alignctl.words import has_cjk, text_length  # noqa: F401 (io's text helpers, kept for their users)

ROLES = ("system", "user", "assistant", "tool")
KINDS = ("prompts", "candidates", "preferences", "unpaired", "completions")
ANSWERS = ("chosen", "rejected", "completion")  # the fields that hold an answer to "prompt"
KIND_NAMES = {"preferences": "preference pairs", "candidates": "collect's candidates", "unpaired": "unpaired answers"}
KIND_NAMES["completions"] = "prompt-completion records"


# ---------------------------------------------------------------------------------------------
# Messages and text


def is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


def check_messages(value: Any, name: str, *, last_role: str | None = None) -> str | None:
    """The first thing wrong with a message list, or None."""
    if not isinstance(value, list) or not value:
        return f'"{name}" must be a non-empty list of messages'
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            return f'"{name}"[{i}] must be an object with "role" and "content"'
        role, content = msg.get("role"), msg.get("content")
        if role is None:
            return f'"{name}"[{i}]: "role" is missing'
        if role not in ROLES:
            return f'"{name}"[{i}]: unknown role {role!r} (expected one of {", ".join(ROLES)})'
        if "content" not in msg:
            return f'"{name}"[{i}]: "content" is missing'
        if not isinstance(content, str):
            return f'"{name}"[{i}]: "content" must be a string, got {type(content).__name__}'
        if not content.strip() and role != "system":
            return f'"{name}"[{i}]: "content" is empty'
    if last_role and value[-1].get("role") != last_role:
        article = "an" if last_role == "assistant" else "a"
        return f'"{name}" must end with {article} {last_role} turn, it ends with {value[-1].get("role")!r}'
    return None


def check_text_or_messages(rec: dict, name: str, *, last_role: str | None = None) -> str | None:
    if name not in rec:
        return f'"{name}" is missing'
    value = rec[name]
    if isinstance(value, str):
        return None if value.strip() else f'"{name}" is an empty string'
    if isinstance(value, list):
        return check_messages(value, name, last_role=last_role)
    return f'"{name}" must be a string or a list of messages, got {type(value).__name__}'


def text_of(value: str | list[dict]) -> str:
    """Plain text of a completion: the string, or the content of its last assistant message."""
    if isinstance(value, str):
        return value
    for msg in reversed(value):
        if msg.get("role") == "assistant":
            return msg.get("content", "")
    return value[-1].get("content", "") if value else ""


def prompt_id(prompt: str | list[dict]) -> str:
    """Stable id of a prompt: the first 16 hex digits of the sha256 of its canonical JSON."""
    blob = json.dumps(prompt, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Per-kind record checks


def check_prompt(rec: dict) -> str | None:
    if "prompt" not in rec:
        return '"prompt" is missing'
    if isinstance(rec["prompt"], list):
        err = check_messages(rec["prompt"], "prompt", last_role="user")
    else:
        err = check_text_or_messages(rec, "prompt")
    if err:
        return err
    rid = rec.get("id")
    # bool is an int subclass to Python, but `true` is no id
    if "id" in rec and (isinstance(rid, bool) or not isinstance(rid, str | int) or rid == ""):
        return '"id" must be a non-empty string or an integer'
    return None


def check_candidates(rec: dict) -> str | None:
    err = check_prompt(rec)
    if err:
        return err
    comps = rec.get("completions")
    if comps is None:
        return '"completions" is missing'
    if not isinstance(comps, list) or not comps:
        return '"completions" must be a non-empty list'
    for i, c in enumerate(comps):
        if isinstance(c, str):
            continue
        if isinstance(c, list):
            sub = check_messages(c, f"completions[{i}]", last_role="assistant")
            if sub:
                return sub
            continue
        return f'"completions"[{i}] must be a string or a list of messages'
    scores = rec.get("scores")
    if scores is not None:
        if not isinstance(scores, list) or len(scores) != len(comps):
            return '"scores" must be a list with one number per completion'
        if not all(isinstance(s, int | float) and not isinstance(s, bool) or s is None for s in scores):
            return '"scores" must hold numbers'
    return None


def preference_shape(rec: dict) -> str:
    """'explicit' or 'implicit', and 'conversational' or 'standard': e.g. 'implicit/conversational'."""
    explicit = "prompt" in rec
    conv = isinstance(rec.get("chosen"), list)
    return f"{'explicit' if explicit else 'implicit'}/{'conversational' if conv else 'standard'}"


def check_preference(rec: dict) -> str | None:
    explicit = "prompt" in rec
    for name in ("chosen", "rejected"):
        if name not in rec:
            return f'"{name}" is missing'
    if explicit:
        err = _check_prompt_answers(rec, ("chosen", "rejected"))
        if err:
            return err
    else:
        for name in ("chosen", "rejected"):
            err = check_text_or_messages(rec, name, last_role="assistant")
            if err:
                return err
    if isinstance(rec["chosen"], str) != isinstance(rec["rejected"], str):
        return '"chosen" and "rejected" must both be strings or both be message lists'
    if rec["chosen"] == rec["rejected"]:
        return '"chosen" is identical to "rejected" (the pair teaches nothing)'
    for name in ("score_chosen", "score_rejected"):
        if name in rec and (isinstance(rec[name], bool) or not isinstance(rec[name], int | float)):
            return f'"{name}" must be a number'
    return None


def _check_prompt_answers(rec: dict, answers: tuple[str, ...]) -> str | None:
    """An explicit prompt (text, or messages ending with the user's) and its answers (text, or
    messages ending with the assistant's), all of one kind."""
    err = check_text_or_messages(rec, "prompt")
    if not err and isinstance(rec["prompt"], list):
        err = check_messages(rec["prompt"], "prompt", last_role="user")
    for name in answers:
        err = err or check_text_or_messages(rec, name, last_role="assistant")
    if not err and isinstance(rec["prompt"], str) != isinstance(rec[answers[0]], str):
        err = f'"prompt" and "{answers[0]}" must both be strings or both be message lists'
    return err


def check_unpaired(rec: dict) -> str | None:
    """KTO's unpaired shape: {"prompt", "completion", "label": true|false}."""
    for name in ("prompt", "completion", "label"):
        if name not in rec:
            return f'"{name}" is missing'
    err = _check_prompt_answers(rec, ("completion",))
    if err:
        return err
    if not isinstance(rec["label"], bool):
        return f'"label" must be true (desirable) or false, got {rec["label"]!r}'
    return None


def check_completion(rec: dict) -> str | None:
    """SFT's shapes: a prompt and its answer, or a conversation whose last turn is the answer."""
    if "messages" in rec and "completion" not in rec:
        err = check_messages(rec["messages"], "messages", last_role="assistant")
        return err or (None if len(rec["messages"]) > 1 else '"messages" holds no turn before the answer')
    return _check_prompt_answers(rec, ("completion",))


CHECKS = {
    "prompts": check_prompt,
    "candidates": check_candidates,
    "preferences": check_preference,
    "unpaired": check_unpaired,
    "completions": check_completion,
}


def guess_kind(rec: dict) -> str:
    if "completions" in rec:
        return "candidates"
    if "completion" in rec and "label" in rec:
        return "unpaired"
    if "completion" in rec or "messages" in rec:
        return "completions"
    if "chosen" in rec or "rejected" in rec:
        return "preferences"
    return "prompts"


def wrong_kind(rec: dict, kind: str) -> str:
    """A record of `kind` where prompts are wanted: what the file holds and what is wanted instead."""
    has = ", ".join(f'"{k}"' for k in rec if k not in ("prompt", "id"))
    return f'a file of {KIND_NAMES[kind]} (its records have {has}), but this input takes prompts: {{"prompt": ...}}'


# ---------------------------------------------------------------------------------------------
# Reading


def read(
    source: str | Path, kind: str | None = None, *, split: str | None = None, max_problems: int = 1000
) -> ReadResult:
    """Read and check every record of a source (any format `readers` knows); never raises for
    record-level problems (see `load`)."""
    result = ReadResult(path=Path(source), kind=kind or "")
    seen_ids: dict[str, int] = {}
    for pos, rec in rows(source, result, split=split):
        if len(result.problems) >= max_problems:
            break
        if not isinstance(rec, dict):
            result.problem(pos, f"expected a JSON object, got {type(rec).__name__}")
            continue
        if not result.kind:
            result.kind = guess_kind(rec)
        if result.kind in ("preferences", "unpaired"):
            whole, err = split_conversation(rec)
            if err:
                result.problem(pos, err)
                continue
            if whole is not None:
                rec = whole
                result.normalised += 1
        err = CHECKS[result.kind](rec)
        if not err and result.kind == "prompts" and (other := guess_kind(rec)) != "prompts":
            result.problem(pos, wrong_kind(rec, other))  # accepted, it would train on the wrong text
            break
        if err:
            if err.endswith("is missing") and result.columns:  # likely a data set of another shape
                err += f" (its columns: {', '.join(result.columns)})"
            result.problem(pos, err)
            continue
        if result.kind in ("prompts", "candidates"):
            rid = str(rec["id"]) if "id" in rec else prompt_id(rec["prompt"])
            if rid in seen_ids:
                where = f"line {seen_ids[rid]}" if result.unit == "line" else f"row {seen_ids[rid]}"
                result.problem(pos, f'duplicate prompt id {rid!r} (first on {where}); give each an "id"')
                continue
            seen_ids[rid] = pos
            rec = {"id": rid, **{k: v for k, v in rec.items() if k != "id"}}
        result.records.append(rec)
        result.lines.append(pos)
    if not result.kind:
        result.kind = kind or "prompts"
    return result


read_jsonl = read  # the name before other formats were read


def split_conversation(rec: dict) -> tuple[dict | None, str | None]:
    """(normalised record, None) for a record whose answers are whole conversations that begin with
    its prompt's turns (UltraFeedback-binarized, Tulu 3: `prompt` a string, `chosen`/`rejected`
    [system?, user, assistant]); (None, None) for any other record; (None, error) when ambiguous.

    The prompt becomes those turns (a system turn the conversations add included) and each answer
    what follows, so no prompt text is trained on as answer.
    """
    names = [n for n in ANSWERS if n in rec]
    if "prompt" not in rec or not any(_opens_with_prompt_side(rec[n]) for n in names):
        return None, None
    prompt = rec["prompt"]
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    first = rec[names[0]]
    if not is_messages(turns) or not all(is_messages(rec[n]) for n in names):
        return None, None  # mixed types: the checks say which
    lead = 0  # system turns the conversations add before the prompt's own turns
    if not turns or turns[0].get("role") != "system":
        while lead < len(first) and first[lead].get("role") == "system":
            lead += 1
    k = lead + len(turns)
    if [_turn(m) for m in first[lead:k]] != [_turn(m) for m in turns]:
        return None, (
            f'"{names[0]}" is a conversation that does not start with the prompt\'s turn(s): '
            'give "prompt" as those turns and the answer alone, or the conversation without "prompt"'
        )
    for n in names[1:]:
        if [_turn(m) for m in rec[n][:k]] != [_turn(m) for m in first[:k]]:
            return None, f'"{names[0]}" and "{n}" disagree on the prompt turns they start with'
    return {**rec, "prompt": first[:k], **{n: rec[n][k:] for n in names}}, None


def _opens_with_prompt_side(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and isinstance(value[0], dict) and value[0].get("role") != "assistant"
    )


def _turn(msg: dict) -> tuple[Any, Any]:
    content = msg.get("content")
    return msg.get("role"), content.strip() if isinstance(content, str) else content


def load(path: str | Path, kind: str | tuple[str, ...], *, split: str | None = None) -> list[dict]:
    """Records of a source of `kind` (or of one of several kinds, guessed from its first record), or
    an InputError naming the first bad line or row (and the count)."""
    result = read(path, kind if isinstance(kind, str) else None, split=split)
    if not isinstance(kind, str) and result.kind not in kind:
        raise InputError(f"{result.path}: holds {result.kind} records, expected {' or '.join(kind)}")
    for w in result.warnings:
        warn(w)
    if result.problems:
        first = result.problems[0].render(result.path)
        more = len(result.problems) - 1
        extra = f" (and {more} more problem{'s' if more > 1 else ''}: alignctl validate {result.path})" if more else ""
        raise InputError(first + extra)
    if result.normalised:
        info(f"{result.path}: {result.normalised} records hold whole conversations; their prompt turns were split off")
    return result.records


def to_explicit(rec: dict) -> dict:
    """An explicit-prompt copy of a preference record (the shared prefix of an implicit pair)."""
    if "prompt" in rec:
        return rec
    chosen, rejected = rec["chosen"], rec["rejected"]
    if isinstance(chosen, list):
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        return {**rec, "prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}
    n = len(os.path.commonprefix([chosen, rejected]))
    # back up to a word boundary so a word shared by both answers stays in the answers: whitespace,
    # or for Chinese (no spaces) full-width punctuation such as "：" or "？"
    while n > 0 and not _boundary(chosen[n - 1]):
        n -= 1
    return {**rec, "prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}


def _boundary(char: str) -> bool:
    return char.isspace() or (ord(char) >= 0x2000 and unicodedata.category(char).startswith("P"))


def unpair(rec: dict) -> list[dict]:
    """A preference pair as two unpaired (KTO) records: chosen desirable, rejected not (as TRL's
    `unpair_preference_dataset` does)."""
    rec = to_explicit(rec)
    return [
        {"prompt": rec["prompt"], "completion": rec["chosen"], "label": True},
        {"prompt": rec["prompt"], "completion": rec["rejected"], "label": False},
    ]
