"""Files: writing atomically (temp file + rename), the fsynced journal of resumable stages, and
reading a text input with one clear line when it cannot be read.

Outputs are always JSONL or JSON (docs/formats.md), whatever format the inputs came in.
`io` re-exports these names, so `io.write_jsonl` and `files.write_jsonl` are the same function.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from alignctl.errors import InputError, OutputError


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


def read_text(path: str | Path, what: str) -> str:
    """A UTF-8 input file's text; a missing or unreadable file is one InputError line naming `what`
    (`runs/x/metrics.jsonl: file not found (every training stage writes one)`)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found ({what})") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file ({what})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read {what}: {exc}") from None
