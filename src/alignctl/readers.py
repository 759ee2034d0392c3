"""Where input records come from: JSONL, a JSON array, Parquet, a `datasets.save_to_disk` dir, a
folder of data files or a hub dataset (`--split`).

`rows(source, result, split=)` yields `(position, value)` for every record and puts what cannot be
decoded into `result.problems` with its position: the line of a JSONL file, the row (from 1) of
everything else. What a record must look like is io's concern (`io.read` checks every value).
`fingerprint(source, split)` identifies an input for manifests: a file's sha256, the sha256 of a
dataset dir's files, or the hub id and split.

Which reader: an existing dir is a saved dataset (`dataset_dict.json` / `state.json`) or a folder
of data files (`datasets.load_dataset(dir)`); a `.parquet` file is Parquet; a file whose first
character is `[` is a JSON array; any other file is JSONL. A source that does not exist is a hub
dataset id when `--split` is given, else "file not found". A null (or NaN) cell of a table is an
absent field (a column holds a value for every row); a binary cell is a problem of its row.
`datasets` and `pyarrow` load only here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignctl.errors import InputError
from alignctl.files import sha256_file

MAX_LINE_BYTES = 8 * 1024 * 1024  # one record over 8 MiB is a broken file, not a prompt
# a \uD800-\uDFFF escape: fine inside a surrogate pair (an escaped emoji), not on its own
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SAVED = ("dataset_dict.json", "state.json")  # what datasets.save_to_disk writes


@dataclass
class Problem:
    line: int  # 0 = the source as a whole
    message: str
    unit: str = "line"  # "row" for everything but JSONL

    def render(self, path: Path | str) -> str:
        if not self.line:
            return f"{path}: {self.message}"
        return (
            f"{path}:{self.line}: {self.message}" if self.unit == "line" else f"{path}: row {self.line}: {self.message}"
        )


@dataclass
class ReadResult:
    path: Path
    kind: str
    records: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # position of each record (line or row)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unit: str = "line"
    normalised: int = 0  # records given as full conversations whose prompt turns were split off
    columns: list[str] = field(default_factory=list)  # a table's columns (named when a field is missing)

    def problem(self, position: int, message: str) -> None:
        self.problems.append(Problem(position, message, self.unit))


def rows(source: str | Path, result: ReadResult, *, split: str | None = None) -> Iterator[tuple[int, Any]]:
    """(position, decoded value) of every record of `source`; decoding problems go to `result`."""
    path = Path(source)
    if path.is_dir():
        result.unit = "row"
        yield from _table(_dataset_rows(path, split, result), result)
        return
    if not path.exists():
        if split is not None:
            result.unit = "row"
            yield from _table(_hub_rows(str(source), split, result), result)
            return
        hint = " (a hub dataset id needs --split)" if re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)) else ""
        raise InputError(f"{source}: file not found{hint}")
    if split is not None:
        raise InputError(f"{source}: is a file; --split {split} picks a split of a dataset dir or hub dataset")
    data = _read_bytes(path)
    if path.suffix == ".parquet" or data[:4] == b"PAR1":
        result.unit = "row"
        yield from _table(_parquet_rows(path, result), result)
        return
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        result.warnings.append(f"{path}: starts with a UTF-8 byte order mark; ignored")
    if data.lstrip()[:1] == b"[":
        result.unit = "row"
        yield from _json_array(data, result)
        return
    yield from _jsonl(data, path, result)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


# ---------------------------------------------------------------------------------------------
# JSON text


def _json_msg(exc: json.JSONDecodeError) -> str:
    """json's reason without its own trailing "at" ("Unterminated string starting at"), which our
    "at column N" would double."""
    return exc.msg.removesuffix(" at")


def decode(text: str, result: ReadResult, position: int, last: bool = False) -> tuple[bool, Any]:
    """(ok, value) of one JSON text; a problem is recorded at `position` when not ok."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        hint = " (a truncated last line: was the file cut off?)" if last else ""
        result.problem(position, f"invalid JSON: {_json_msg(exc)} at column {exc.colno}{hint}")
        return False, None
    except RecursionError:
        result.problem(position, "invalid JSON: nested too deeply")
        return False, None
    except ValueError as exc:  # NaN / Infinity, or an integer over Python's 4300-digit limit
        result.problem(position, f"invalid JSON: {str(exc).split(';')[0]}")
        return False, None
    if _SURROGATE_ESCAPE.search(text) and not _encodable(value):
        result.problem(position, "a string holds a lone UTF-16 surrogate escape (not valid Unicode)")
        return False, None
    return True, value


def _jsonl(data: bytes, path: Path, result: ReadResult) -> Iterator[tuple[int, Any]]:
    if b"\r\n" in data:
        result.warnings.append(f"{path}: has CRLF (Windows) line ends; accepted")
    if not data.strip():
        result.problem(0, "empty file: no records")
        return
    raw_lines = data.split(b"\n")
    ends_with_newline = data.endswith(b"\n")
    for idx, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        if len(raw) > MAX_LINE_BYTES:
            mb = len(raw) / 1e6
            result.problem(idx, f"line is {mb:.1f} MB, over the {MAX_LINE_BYTES >> 20} MiB limit for one record")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            result.problem(idx, f"invalid UTF-8 at column {exc.start + 1} (byte 0x{raw[exc.start]:02x})")
            continue
        last = idx == len(raw_lines) and not ends_with_newline
        ok, value = decode(text.rstrip("\r"), result, idx, last)
        if ok:
            yield idx, value


def _json_array(data: bytes, result: ReadResult) -> Iterator[tuple[int, Any]]:
    """A file holding one JSON array of records (what `json.dump(records)` and pandas write)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        result.problem(0, f"invalid UTF-8 at byte {exc.start} (0x{data[exc.start]:02x})")
        return
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        result.problem(0, f"invalid JSON array: {_json_msg(exc)} at line {exc.lineno} column {exc.colno}")
        return
    except (RecursionError, ValueError) as exc:
        result.problem(0, f"invalid JSON array: {'nested too deeply' if isinstance(exc, RecursionError) else exc}")
        return
    if not _encodable(value):
        result.problem(0, "a string holds a lone UTF-16 surrogate escape (not valid Unicode)")
        return
    if not value:
        result.problem(0, "empty JSON array: no records")
    yield from enumerate(value, start=1)


def _reject_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON: other tools (and TRL's datasets) reject them
    raise ValueError(f"{name} is not a JSON value")


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Tables (Parquet, datasets)


def _table(rows_: Iterator[dict], result: ReadResult) -> Iterator[tuple[int, Any]]:
    """Rows of a table as JSON values: null cells are absent fields, dates become ISO text; a
    binary cell (an image column) is a problem of its row, as JSONL could not hold it."""
    for pos, row in enumerate(rows_, start=1):
        try:
            yield pos, _as_json(row)
        except TypeError as exc:
            result.problem(pos, str(exc))


def _as_json(value: Any, name: str = "") -> Any:
    if isinstance(value, dict):
        return {str(k): _as_json(v, name or str(k)) for k, v in value.items() if not _null(v)}
    if isinstance(value, list | tuple):
        return [_as_json(v, name) for v in value]
    if isinstance(value, float) and math.isinf(value):
        raise TypeError(f"column {_shown(name)} holds an infinite number")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes | bytearray):
        raise TypeError(f"column {_shown(name)} holds binary data, not text")
    if hasattr(value, "isoformat"):  # datetime, date, time
        return value.isoformat()
    return str(value)  # Decimal, timedelta: their text


def _null(value: Any) -> bool:
    # pandas writes a missing number as NaN: a null cell, as JSON has no NaN
    return value is None or (isinstance(value, float) and math.isnan(value))


def _shown(name: str) -> str:
    return name if name.isprintable() else repr(name)


def _parquet_rows(path: Path, result: ReadResult) -> Iterator[dict]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        rows = table.to_pylist()
    except Exception as exc:  # a damaged file fails in pyarrow's reader, its decoders or its converters
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    if not rows:
        raise InputError(f"{path}: empty file: no records")
    result.columns = [_shown(c) for c in table.column_names]
    yield from rows


def _dataset_rows(path: Path, split: str | None, result: ReadResult) -> Iterator[dict]:
    """Rows of a dir written by `save_to_disk`, or of a folder of data files (a cloned hub repo)."""
    import datasets

    if any((path / name).is_file() for name in _SAVED):
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # datasets raises many kinds for a damaged dir
            raise InputError(f"{path}: not a readable saved dataset ({_first_line(exc)})") from None
    else:
        if not any(p.is_file() for p in path.rglob("*") if not p.name.startswith(".")):
            raise InputError(f"{path}: is a directory with no data files (expected a file or a saved dataset)")
        ds = _load_dataset(str(path), split, where=str(path))
    yield from _table_rows(ds, path, split, result)


def _hub_rows(dataset_id: str, split: str, result: ReadResult) -> Iterator[dict]:
    from alignctl import hub

    unreachable = hub.check_dataset(dataset_id)  # one request, not datasets' five retries
    ds = _load_dataset(dataset_id, split, where=dataset_id, unreachable=unreachable)
    yield from _table_rows(ds, dataset_id, split, result)


def _load_dataset(ref: str, split: str | None, *, where: str, unreachable: str | None = None):
    import datasets

    try:
        with _quiet():
            return datasets.load_dataset(ref, split=split)
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise InputError(f"{where}: {_unknown_split(split, exc)}") from None
        raise InputError(f"{where}: cannot load the dataset ({_first_line(exc)})") from None
    except (ConnectionError, OSError) as exc:
        why = f"{unreachable}, and no copy is in the local cache" if unreachable else _first_line(exc)
        raise InputError(
            f"{where}: cannot reach the Hugging Face Hub for this dataset ({why}); "
            "offline, use a dir written by datasets' save_to_disk or a local file"
        ) from None
    except Exception as exc:  # datasets' own errors (DatasetNotFoundError, ...) carry the reason
        raise InputError(f"{where}: cannot load the dataset ({_first_line(exc)})") from None


def _table_rows(ds, where: Path | str, split: str | None, result: ReadResult) -> Iterator[dict]:
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        names = ", ".join(ds)
        if split is None:
            if len(ds) != 1:
                raise InputError(f"{where}: holds the splits {names}; choose one with --split")
            split = next(iter(ds))
        if split not in ds:
            raise InputError(f"{where}: no split {split!r} (it has {names})")
        ds = ds[split]
    elif split is not None and not isinstance(ds, datasets.Dataset):
        raise InputError(f"{where}: cannot select --split {split}")
    if not len(ds):
        raise InputError(f"{where}: no records")
    try:
        rows = ds.to_list()
    except Exception as exc:  # a damaged Arrow file fails only when its rows are read
        raise InputError(f"{where}: cannot read the dataset's rows ({_first_line(exc)})") from None
    result.columns = [_shown(c) for c in ds.column_names]
    yield from rows


def _unknown_split(split: str | None, exc: Exception) -> str:
    found = re.search(r"one of \[?([^\]]*)\]?", str(exc))
    available = f" (it has {found.group(1).replace(chr(39), '')})" if found else ""
    return f"no split {split!r}{available}"


class _quiet:
    """Silence datasets' progress bars while it loads (our own console says what happens)."""

    def __enter__(self):
        from datasets.utils import logging as ds_logging

        self._bars = ds_logging.is_progress_bar_enabled()
        ds_logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        from datasets.utils import logging as ds_logging

        if self._bars:
            ds_logging.enable_progress_bar()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# ---------------------------------------------------------------------------------------------
# Fingerprints


def sha256_dir(path: str | Path) -> str:
    """One hash of every file under `path` (names and contents), in a stable order."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(root).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def fingerprint(source: str | Path, split: str | None = None) -> dict[str, str]:
    """What identifies a data input in a manifest (a file: the same as runs.input_fingerprint)."""
    p = Path(source)
    if p.is_file():
        out = {"path": str(p), "sha256": sha256_file(p)}
    elif p.is_dir():
        out = {"path": str(p), "sha256": sha256_dir(p)}
    else:  # a hub dataset: its id and split (the hub's revision is not pinned)
        out = {"ref": str(source)}
    return {**out, "split": split} if split is not None else out
