# ruff: noqa: E501 (the case table reads best one case a line)
"""The bad-input corpus, data: every way a user's file can be wrong (models and outputs:
test_bad_models.py; settings: test_bad_settings.py; the shared checks: refusals.py).

Each case must end the same way: exit code 2, one message naming the file and line (or the flag),
no traceback unless --debug, and nothing left behind (no output, no `<out>.partial`). A UTF-8 BOM
and CRLF line ends are the deliberate exceptions, accepted with one warning each (docs/formats.md).

The data cases run in-process (through `io.load` and through the stage that reads that kind of
file, whose model argument points nowhere: the data error must come first); a representative
subset runs `python -m alignctl` as a subprocess to check the real exit code and stderr.
All files are generated here; no binary fixtures are committed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alignctl import io
from alignctl.errors import InputError
from refusals import (
    OK_CAND,
    OK_PREF,
    OK_PROMPT,
    A,
    U,
    assert_nothing_left,
    fails_writing_nothing,
    jl,
    model_dir,
    one_error_line,
    stage_args,
    write_prefs,
)
from stage_cases import CASES, write_inputs

# (case id, kind, file bytes, line named in the message (0: the file as a whole), message part)
DATA_CASES = [
    # preferences
    ("malformed-json", "preferences", jl(OK_PREF) + b'{"prompt": "a", "chosen": "b" "rejected": "c"}\n', 2, "invalid JSON: Expecting ',' delimiter"),
    ("unterminated-string", "preferences", jl(OK_PREF) + b'{"prompt": "a", "chosen": "b}\n' + jl(OK_PREF), 2, "invalid JSON: Unterminated string starting at column 27"),
    ("trailing-partial-line", "preferences", jl(OK_PREF, OK_PREF) + b'{"prompt": "a", "cho', 3, "truncated last line"),
    ("missing-chosen", "preferences", jl(OK_PREF, {"prompt": "a", "rejected": "c"}), 2, '"chosen" is missing'),
    ("missing-rejected", "preferences", jl({"prompt": "a", "chosen": "b"}), 1, '"rejected" is missing'),
    ("chosen-wrong-type", "preferences", jl({**OK_PREF, "chosen": 5}), 1, '"chosen" must be a string or a list of messages, got int'),
    ("chosen-empty-string", "preferences", jl({**OK_PREF, "chosen": ""}), 1, '"chosen" is an empty string'),
    ("prompt-blank-string", "preferences", jl({**OK_PREF, "prompt": "  \t"}), 1, '"prompt" is an empty string'),
    ("chosen-equals-rejected", "preferences", jl(OK_PREF, {**OK_PREF, "rejected": "yes"}), 2, '"chosen" is identical to "rejected"'),
    ("unknown-role", "preferences", jl({"chosen": U + [{"role": "bot", "content": "x"}], "rejected": U + A}), 1, "unknown role 'bot'"),
    ("conversation-ends-on-user", "preferences", jl({"chosen": A + U, "rejected": U + A}), 1, '"chosen" must end with an assistant turn, it ends with \'user\''),
    ("message-without-content", "preferences", jl({"prompt": U, "chosen": [{"role": "assistant"}], "rejected": A}), 1, '"chosen"[0]: "content" is missing'),
    ("content-not-a-string", "preferences", jl({"prompt": U, "chosen": [{"role": "assistant", "content": ["y"]}], "rejected": A}), 1, '"content" must be a string, got list'),
    ("prompt-string-chosen-messages", "preferences", jl({"prompt": "q", "chosen": A, "rejected": A}), 1, '"prompt" and "chosen" must both be strings or both be message lists'),
    ("chosen-string-rejected-messages", "preferences", jl({"chosen": "Q yes", "rejected": U + A}), 1, '"chosen" and "rejected" must both be'),
    ("explicit-prompt-ends-on-assistant", "preferences", jl({"prompt": U + A, "chosen": A, "rejected": [{"role": "assistant", "content": "no"}]}), 1, '"prompt" must end with a user turn'),
    ("empty-prompt-messages", "preferences", jl({"prompt": [], "chosen": "y", "rejected": "n"}), 1, '"prompt" must be a non-empty list of messages'),
    ("conversation-without-the-prompt", "preferences", jl({"prompt": "Is grass green?", "chosen": U + A, "rejected": U + [{"role": "assistant", "content": "no"}]}), 1, "does not start with the prompt's turn(s)"),
    ("conversations-disagree-on-prompt", "preferences", jl({"prompt": "Is the sky blue?", "chosen": U + A, "rejected": [{"role": "system", "content": "x"}] + U + A}), 1, "disagree on the prompt turns"),
    ("score-not-a-number", "preferences", jl({**OK_PREF, "score_chosen": "high"}), 1, '"score_chosen" must be a number'),
    ("line-is-an-array", "preferences", jl(OK_PREF, [OK_PREF]), 2, "expected a JSON object, got list"),
    ("line-is-null", "preferences", jl(OK_PREF) + b"null\n", 2, "expected a JSON object, got NoneType"),
    ("nan-score", "preferences", b'{"prompt": "q", "chosen": "y", "rejected": "n", "score_chosen": NaN}\n', 1, "NaN is not a JSON value"),
    ("lone-surrogate", "preferences", b'{"prompt": "q", "chosen": "y\\ud800", "rejected": "n"}\n', 1, "lone UTF-16 surrogate"),
    ("integer-over-4300-digits", "preferences", b'{"prompt": "q", "chosen": "y", "rejected": "n", "score_chosen": 1' + b"0" * 5000 + b"}\n", 1, "invalid JSON: Exceeds the limit"),
    ("nested-too-deeply", "preferences", jl(OK_PREF) + b"[" * 100_000 + b"\n", 2, "nested too deeply"),
    # prompts
    ("prompt-missing", "prompts", jl(OK_PROMPT, {"question": "q"}), 2, '"prompt" is missing'),
    ("prompt-wrong-type", "prompts", jl({"prompt": 42}), 1, '"prompt" must be a string or a list of messages, got int'),
    ("prompt-ends-on-assistant", "prompts", jl({"prompt": U + A}), 1, '"prompt" must end with a user turn'),
    ("prompt-system-only", "prompts", jl({"prompt": [{"role": "system", "content": "be brief"}]}), 1, '"prompt" must end with a user turn'),
    ("prompt-message-not-object", "prompts", jl({"prompt": ["hello"]}), 1, '"prompt"[0] must be an object'),
    ("prompt-unknown-role", "prompts", jl({"prompt": [{"role": "human", "content": "hi"}]}), 1, "unknown role 'human'"),
    ("duplicate-id", "prompts", jl({"prompt": "a", "id": "x"}, {"prompt": "b", "id": "x"}), 2, "duplicate prompt id 'x' (first on line 1)"),
    ("duplicate-prompt-no-id", "prompts", jl({"prompt": "a"}, OK_PROMPT, {"prompt": "a"}), 3, "duplicate prompt id"),
    ("id-wrong-type", "prompts", jl({"prompt": "a", "id": ["x"]}), 1, '"id" must be a non-empty string or an integer'),
    ("message-prompt-empty-id", "prompts", jl({"prompt": U, "id": ""}), 1, '"id" must be a non-empty string or an integer'),
    ("message-prompt-object-id", "prompts", jl({"prompt": U, "id": {"x": 1}}), 1, '"id" must be a non-empty string or an integer'),
    ("id-true", "prompts", jl({"prompt": "a", "id": True}), 1, '"id" must be a non-empty string or an integer'),
    # candidates
    ("completions-missing", "candidates", jl(OK_CAND, {"id": "b", "prompt": "q"}), 2, '"completions" is missing'),
    ("completions-empty", "candidates", jl({**OK_CAND, "completions": []}), 1, '"completions" must be a non-empty list'),
    ("completion-wrong-type", "candidates", jl({**OK_CAND, "completions": ["yes", 3]}), 1, '"completions"[1] must be a string or a list of messages'),
    ("completion-ends-on-user", "candidates", jl({**OK_CAND, "prompt": U, "completions": [A, U]}), 1, '"completions[1]" must end with an assistant turn'),
    ("scores-length-mismatch", "candidates", jl({**OK_CAND, "scores": [1.0]}), 1, '"scores" must be a list with one number per completion'),
    ("scores-not-numbers", "candidates", jl({**OK_CAND, "scores": [1.0, "high"]}), 1, '"scores" must hold numbers'),
    ("candidates-prompt-missing", "candidates", jl({"id": "a", "completions": ["x", "y"]}), 1, '"prompt" is missing'),
    # the file as a whole
    ("invalid-utf8", "prompts", jl(OK_PROMPT) + b'{"prompt": "caf\xe9"}\n', 2, "invalid UTF-8 at column 16 (byte 0xe9)"),
    ("empty-file", "preferences", b"", 0, "empty file: no records"),
    ("blank-lines-only", "prompts", b"\n  \n\r\n", 0, "empty file: no records"),
    ("10mb-single-line", "prompts", b'{"prompt": "' + b"x" * (10 * 1024 * 1024) + b'"}\n', 1, "line is 10.5 MB, over the 8 MiB limit"),
]  # fmt: skip


@pytest.mark.parametrize("case", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_file(case, tmp_path, cli):
    _, kind, data, line, message = case
    path = tmp_path / f"{kind}.jsonl"
    path.write_bytes(data)
    with pytest.raises(InputError) as exc:
        io.load(path, kind)
    text = str(exc.value)
    assert text.startswith(f"{path}:{line}: " if line else f"{path}: "), text[:300]
    assert message in text and "\n" not in text and len(text) < 500, text[:300]

    before = {p.name for p in tmp_path.iterdir()}
    code, out, err = cli(*stage_args(kind, path, tmp_path))
    assert code == 2 and message in err and out == "", (code, err[:300])
    assert_nothing_left(tmp_path, before)


@pytest.mark.parametrize(
    "name, data, warning",
    [
        ("bom", b"\xef\xbb\xbf" + jl(OK_PREF, OK_PREF), "byte order mark"),
        ("crlf", jl(OK_PREF, OK_PREF).replace(b"\n", b"\r\n"), "CRLF"),
        ("bom-crlf-blank-lines", b"\xef\xbb\xbf" + jl(OK_PREF).replace(b"\n", b"\r\n\r\n") + jl(OK_PREF), "CRLF"),
    ],
)
def test_bom_and_crlf_are_accepted_with_a_warning(name, data, warning, tmp_path, capsys):
    """A deliberate choice (docs/formats.md): Windows editors write these; the records are intact."""
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(data)
    records = io.load(path, "preferences")
    assert records == [OK_PREF, OK_PREF]
    err = capsys.readouterr().err
    assert warning in err and str(path) in err


# ---------------------------------------------------------------------------------------------
# Data beyond JSONL (readers.py): Parquet, JSON arrays, saved datasets, folders, hub ids


def _parquet(tmp: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp / "prefs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _saved(tmp: Path, rows: list[dict], splits: tuple[str, ...] = ()) -> Path:
    import datasets

    ds = datasets.Dataset.from_list(rows)
    (datasets.DatasetDict({s: ds for s in splits}) if splits else ds).save_to_disk(tmp / "prefs-ds")
    return tmp / "prefs-ds"


def _corrupt_parquet(tmp: Path) -> Path:
    path = _parquet(tmp, [OK_PREF, OK_PREF])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + b"PAR1")  # cut in the middle, the magic kept at both ends
    return path


def _write(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


# (case id, builder(tmp) -> source, --split, message part)
SOURCE_CASES = [
    ("corrupt-parquet", _corrupt_parquet, None, "not a readable Parquet file"),
    ("not-parquet", lambda t: _write(t, "prefs.parquet", b"PAR1 this is text"), None, "not a readable Parquet file"),
    ("parquet-bad-row", lambda t: _parquet(t, [OK_PREF, {**OK_PREF, "rejected": "yes"}]), None, 'row 2: "chosen" is identical to "rejected"'),
    ("dataset-wrong-columns", lambda t: _saved(t, [{"question": "q", "answer": "a"}]), None, 'row 1: "chosen" is missing (its columns: question, answer)'),
    ("split-that-does-not-exist", lambda t: _saved(t, [OK_PREF], ("train", "test")), "validation", "no split 'validation' (it has train, test)"),
    ("split-not-chosen", lambda t: _saved(t, [OK_PREF], ("train", "test")), None, "holds the splits train, test; choose one with --split"),
    ("split-of-a-file", lambda t: _write(t, "prefs.jsonl", jl(OK_PREF)), "train", "is a file; --split train picks a split of a dataset dir"),
    ("empty-dir", lambda t: (t / "empty").mkdir() or t / "empty", None, "is a directory with no data files"),
    ("json-array-broken", lambda t: _write(t, "prefs.json", b'[{"prompt": "q", "chosen": "y", "rejected": "n"},'), None, "invalid JSON array"),
    ("json-array-of-strings", lambda t: _write(t, "prefs.json", b'["q", "y"]'), None, "row 1: expected a JSON object, got str"),
    ("json-array-empty", lambda t: _write(t, "prefs.json", b"[]"), None, "empty JSON array: no records"),
    ("hub-id-offline", lambda t: "no-such-org/no-such-prefs", "train", "cannot reach the Hugging Face Hub"),
    ("hub-id-without-split", lambda t: "no-such-org/no-such-prefs", None, "file not found (a hub dataset id needs --split)"),
]  # fmt: skip


@pytest.mark.parametrize("case", SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES])
def test_bad_data_source(case, tmp_path, cli, monkeypatch):
    _, build, split, message = case
    monkeypatch.chdir(tmp_path)
    source = build(tmp_path)
    with pytest.raises(InputError) as exc:
        io.load(source, "preferences", split=split)
    text = str(exc.value)
    assert text.startswith(f"{source}: "), text[:300]
    assert message in text and "\n" not in text and len(text) < 500, text[:300]

    args = stage_args("preferences", source, tmp_path) + (["--split", split] if split else [])
    assert message in fails_writing_nothing(cli, tmp_path, *args)


def test_subprocess_bad_data_sources(tmp_path, run):
    """The real exit code and stderr for a corrupt Parquet file and a split that does not exist."""
    for build, split, message in [(_corrupt_parquet, None, "not a readable Parquet file"), (SOURCE_CASES[4][1], "dev", "no split 'dev'")]:  # fmt: skip
        source = build(tmp_path)
        before = {p.name for p in tmp_path.iterdir()}
        proc = run("dpo", "--data", source, *(["--split", split] if split else []), "-m", tmp_path / "nope", "-o", tmp_path / "out")  # fmt: skip
        assert proc.returncode == 2 and message in one_error_line(proc) and proc.stdout == ""
        assert_nothing_left(tmp_path, before)


@pytest.mark.parametrize("stage", sorted(CASES))
def test_every_trl_stage_names_a_broken_input_line_first(stage, tmp_path, cli):
    """Every stage on a TRL trainer (tests/stage_cases.py), its input file cut in the middle of a
    record: one line naming file:line, exit 2, nothing written. The model points nowhere, so the
    data is checked first."""
    write_inputs(tmp_path)
    case = CASES[stage]
    path = tmp_path / case.data
    path.write_bytes(path.read_bytes() + b'{"prompt": "a", "cho')
    line = len(path.read_bytes().splitlines())
    err = fails_writing_nothing(cli, tmp_path, stage, *case.args, "--model", tmp_path / "nowhere", "-o", "out")
    assert f"{case.data}:{line}: invalid JSON" in err and "truncated last line" in err, err


# ---------------------------------------------------------------------------------------------
# The real entry point: exit code, one line on stderr, no traceback, nothing left behind


@pytest.mark.parametrize(
    "case", ["malformed-json", "trailing-partial-line", "invalid-utf8", "10mb-single-line", "conversation-ends-on-user"]
)
def test_subprocess_bad_data(case, tmp_path, run):
    _, kind, data, line, message = next(c for c in DATA_CASES if c[0] == case)
    path = tmp_path / f"{kind}.jsonl"
    path.write_bytes(data)
    before = {p.name for p in tmp_path.iterdir()}
    proc = run(*stage_args(kind, path, tmp_path))
    assert proc.returncode == 2
    line_text = one_error_line(proc)
    assert line_text.startswith(f"error: {path}:{line}: ") and message in line_text
    assert proc.stdout == ""
    assert_nothing_left(tmp_path, before)


def test_subprocess_settings_and_outputs(tmp_path, tiny_lm, run):
    prefs = write_prefs(tmp_path)
    (tmp_path / "taken").mkdir()
    cases = [
        (["--set", "beta=abc"], "out", "--set beta=abc: beta must be a number"),
        (["--set", "betta=1"], "out", "did you mean 'beta'"),
        (["--model", tmp_path / "nope"], "out", "model dir not found"),
        ([], "taken", "pass --overwrite"),
    ]
    for extra, out, message in cases:
        args = ["dpo", "--data", prefs, "-o", tmp_path / out, *extra]
        if "--model" not in extra:
            args += ["--model", tiny_lm]
        proc = run(*args)
        assert proc.returncode == 2 and message in one_error_line(proc), proc.stderr[-1000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefs.jsonl", "taken"]
    assert list((tmp_path / "taken").iterdir()) == []


def test_subprocess_broken_weights_leave_no_partial_dir(tmp_path, tiny_lm, run):
    """The one error found after the run dir exists (weights are read last): the empty dir goes."""
    model = model_dir(tmp_path, tiny_lm)
    (model / "model.safetensors").write_bytes(b"\x00" * 64)
    proc = run("dpo", "--data", write_prefs(tmp_path), "--model", model, "-o", tmp_path / "out")
    assert proc.returncode == 2
    assert "cannot load as a causal LM" in one_error_line(proc)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_validate_reports_all_of_them_at_once(tmp_path, run):
    """`alignctl validate` over the whole corpus: one `file:line:` line per problem, exit 2."""
    files = []
    for case_id, kind, data, line, message in DATA_CASES:
        if len(data) > 1_000_000:
            continue
        path = tmp_path / f"{case_id}.{kind}.jsonl"
        path.write_bytes(data)
        files.append((path, kind, line, message))
    proc = run("validate", *[f[0] for f in files])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for path, _, line, message in files:
        prefix = f"{path}:{line}: " if line else f"{path}: "
        assert any(ln.startswith(prefix) and message in ln for ln in proc.stderr.splitlines()), (path, message)


def test_written_files_get_the_usual_permissions(tmp_path):
    """Outputs go through a temp file (mkstemp: 0600); after the rename they must be readable as any file."""
    old = os.umask(0o022)
    try:
        io.write_jsonl(tmp_path / "out.jsonl", [{"a": 1}])
        io.write_json(tmp_path / "out.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "out.jsonl").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o644
