"""JSONL formats: reading with line-numbered validation, writing atomically.

The one module that parses and writes alignctl's data files (design.md, "Data contracts"). Field
names are TRL's, so TRL-format files feed alignctl and alignctl's files feed TRL.

- prompts:     {"prompt": str | [messages], "id"?: str, <extra columns>}
- candidates:  {"id", "prompt", "completions": [str | [messages]], <extra columns>, "generator": {...},
                "scores"?: [float]}
- preferences: {"chosen", "rejected"} (implicit prompt; strings or message lists) or
               {"prompt", "chosen", "rejected"} (explicit prompt), + optional score_chosen,
               score_rejected, label.

Deliberate choices for odd-but-harmless input (docs/formats.md): a UTF-8 BOM and CRLF line ends
are accepted with one warning each; blank lines are skipped. Everything else that is wrong is an
`InputError` naming `path:line`, raised before any model loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from alignctl.console import warn
from alignctl.errors import InputError, OutputError

ROLES = ("system", "user", "assistant", "tool")
MAX_LINE_BYTES = 8 * 1024 * 1024  # one record over 8 MiB is a broken file, not a prompt
KINDS = ("prompts", "candidates", "preferences", "unpaired")
# a \uD800-\uDFFF escape: fine inside a surrogate pair (an escaped emoji), not on its own
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


@dataclass
class Problem:
    line: int  # 0 = the file as a whole
    message: str

    def render(self, path: Path | str) -> str:
        return f"{path}:{self.line}: {self.message}" if self.line else f"{path}: {self.message}"


@dataclass
class ReadResult:
    path: Path
    kind: str
    records: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # line number of each record
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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
        return check_messages(rec["prompt"], "prompt", last_role="user")
    err = check_text_or_messages(rec, "prompt")
    if err:
        return err
    if "id" in rec and (not isinstance(rec["id"], str | int) or rec["id"] == ""):
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
        err = check_text_or_messages(rec, "prompt")
        if err:
            return err
        if isinstance(rec["prompt"], list):
            err = check_messages(rec["prompt"], "prompt", last_role="user")
            if err:
                return err
        for name in ("chosen", "rejected"):
            err = check_text_or_messages(rec, name, last_role="assistant")
            if err:
                return err
        if isinstance(rec["prompt"], str) != isinstance(rec["chosen"], str):
            return '"prompt" and "chosen" must both be strings or both be message lists'
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


def check_unpaired(rec: dict) -> str | None:
    """KTO's unpaired shape: {"prompt", "completion", "label": true|false}."""
    for name in ("prompt", "completion", "label"):
        if name not in rec:
            return f'"{name}" is missing'
    err = check_text_or_messages(rec, "prompt") or check_text_or_messages(rec, "completion", last_role="assistant")
    if err:
        return err
    if isinstance(rec["prompt"], list):
        err = check_messages(rec["prompt"], "prompt", last_role="user")
        if err:
            return err
    if isinstance(rec["prompt"], str) != isinstance(rec["completion"], str):
        return '"prompt" and "completion" must both be strings or both be message lists'
    if not isinstance(rec["label"], bool):
        return f'"label" must be true (desirable) or false, got {rec["label"]!r}'
    return None


CHECKS = {
    "prompts": check_prompt,
    "candidates": check_candidates,
    "preferences": check_preference,
    "unpaired": check_unpaired,
}


def guess_kind(rec: dict) -> str:
    if "completions" in rec:
        return "candidates"
    if "completion" in rec and "label" in rec:
        return "unpaired"
    if "chosen" in rec or "rejected" in rec:
        return "preferences"
    return "prompts"


# ---------------------------------------------------------------------------------------------
# Reading


def iter_lines(path: Path, result: ReadResult) -> Iterator[tuple[int, str]]:
    """(line number, decoded text) for every non-blank line; problems go to `result`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a JSONL file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        result.warnings.append(f"{path}: starts with a UTF-8 byte order mark; ignored")
    if b"\r\n" in data:
        result.warnings.append(f"{path}: has CRLF (Windows) line ends; accepted")
    if not data.strip():
        result.problems.append(Problem(0, "empty file: no records"))
        return
    raw_lines = data.split(b"\n")
    ends_with_newline = data.endswith(b"\n")
    for idx, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        if len(raw) > MAX_LINE_BYTES:
            result.problems.append(
                Problem(
                    idx, f"line is {len(raw) / 1e6:.1f} MB, over the {MAX_LINE_BYTES >> 20} MiB limit for one record"
                )
            )
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = raw[exc.start]
            result.problems.append(Problem(idx, f"invalid UTF-8 at column {exc.start + 1} (byte 0x{bad:02x})"))
            continue
        last = idx == len(raw_lines) and not ends_with_newline
        yield idx, text.rstrip("\r"), last


def read_jsonl(path: str | Path, kind: str | None = None, *, max_problems: int = 1000) -> ReadResult:
    """Read and validate a whole file; never raises for record-level problems (see `load`)."""
    path = Path(path)
    result = ReadResult(path=path, kind=kind or "")
    seen_ids: dict[str, int] = {}
    for lineno, text, last in iter_lines(path, result):
        if len(result.problems) >= max_problems:
            break
        try:
            rec = json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            hint = " (a truncated last line: was the file cut off?)" if last else ""
            result.problems.append(Problem(lineno, f"invalid JSON: {exc.msg} at column {exc.colno}{hint}"))
            continue
        except RecursionError:
            result.problems.append(Problem(lineno, "invalid JSON: nested too deeply"))
            continue
        except ValueError as exc:  # NaN / Infinity, or an integer over Python's 4300-digit limit
            result.problems.append(Problem(lineno, f"invalid JSON: {str(exc).split(';')[0]}"))
            continue
        if _SURROGATE_ESCAPE.search(text) and not _encodable(rec):
            result.problems.append(Problem(lineno, "a string holds a lone UTF-16 surrogate escape (not valid Unicode)"))
            continue
        if not isinstance(rec, dict):
            result.problems.append(Problem(lineno, f"expected a JSON object, got {type(rec).__name__}"))
            continue
        if not result.kind:
            result.kind = guess_kind(rec)
        err = CHECKS[result.kind](rec)
        if err:
            result.problems.append(Problem(lineno, err))
            continue
        if result.kind in ("prompts", "candidates"):
            rid = str(rec["id"]) if "id" in rec else prompt_id(rec["prompt"])
            if rid in seen_ids:
                result.problems.append(
                    Problem(lineno, f'duplicate prompt id {rid!r} (first on line {seen_ids[rid]}); give each an "id"')
                )
                continue
            seen_ids[rid] = lineno
            rec = {"id": rid, **{k: v for k, v in rec.items() if k != "id"}}
        result.records.append(rec)
        result.lines.append(lineno)
    if not result.kind:
        result.kind = kind or "prompts"
    return result


def _reject_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON: other tools (and TRL's datasets) reject them
    raise ValueError(f"{name} is not a JSON value")


def _encodable(rec: Any) -> bool:
    try:
        dumps(rec).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load(path: str | Path, kind: str | tuple[str, ...]) -> list[dict]:
    """Records of a file of `kind` (or of one of several kinds, guessed from its first record), or an
    InputError naming the first bad line (and the count)."""
    result = read_jsonl(path, kind if isinstance(kind, str) else None)
    if not isinstance(kind, str) and result.kind not in kind:
        raise InputError(f"{result.path}: holds {result.kind} records, expected {' or '.join(kind)}")
    for w in result.warnings:
        warn(w)
    if result.problems:
        first = result.problems[0].render(result.path)
        more = len(result.problems) - 1
        extra = f" (and {more} more problem{'s' if more > 1 else ''}: alignctl validate {result.path})" if more else ""
        raise InputError(first + extra)
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
    # back up to a whitespace boundary so a word shared by both answers stays in the answers
    while n > 0 and not chosen[n - 1].isspace():
        n -= 1
    return {**rec, "prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}


# ---------------------------------------------------------------------------------------------
# Writing


def unpair(rec: dict) -> list[dict]:
    """A preference pair as two unpaired (KTO) records: chosen desirable, rejected not (as TRL's
    `unpair_preference_dataset` does)."""
    rec = to_explicit(rec)
    return [
        {"prompt": rec["prompt"], "completion": rec["chosen"], "label": True},
        {"prompt": rec["prompt"], "completion": rec["rejected"], "label": False},
    ]


def dumps(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False)


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary sibling path; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{parent}: cannot create output directory: {exc.strerror}") from None
    _remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write here: {exc.strerror}") from None
    os.close(fd)
    # mkstemp makes the file 0600; an output should get the usual permissions (0644 under umask 022)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files of `path` left by a killed writer (its pid is gone, or an older alignctl
    that wrote no pid): nothing else ever removes them. A live writer's stays."""
    own = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)\.)?\w+\.tmp")
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        match = own.fullmatch(tmp.name)
        if not match:
            continue  # the temp of another file whose name starts like this one
        pid = int(match.group(1) or 0)
        try:
            if pid and pid != os.getpid():
                os.kill(pid, 0)  # raises if there is no such process
                continue
        except ProcessLookupError:
            pass
        except OSError:  # a live process of another user
            continue
        tmp.unlink(missing_ok=True)


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write all records atomically; returns the count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(dumps(rec) + "\n")
            n += 1
    return n


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


class Appender:
    """Append records one by one, each flushed and fsynced: the journal behind resumable stages."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        # a test aid (tests/test_crash.py): ALIGNCTL_CRASH_AFTER_RECORDS=N kills the process part-way
        # through record N+1, leaving the torn line a crash mid-write leaves
        self._crash_after = int(os.environ.get("ALIGNCTL_CRASH_AFTER_RECORDS") or 0)
        self._added = 0

    def add(self, rec: dict) -> None:
        line = dumps(rec) + "\n"
        if self._crash_after and self._added >= self._crash_after:
            self._fh.write(line[: len(line) // 2])
            self._fh.flush()
            os.fsync(self._fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup runs, as when a job is preempted or OOM-killed
        self._fh.write(line)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._added += 1

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_journal(path: str | Path) -> list[dict]:
    """Records of an append-only journal, dropping a torn last line left by a crash."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    good_bytes = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            try:
                out.append(json.loads(raw))
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        with open(path, "rb+") as fh:  # cut the torn tail so later appends start on a clean line
            fh.truncate(good_bytes)
    return out


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
