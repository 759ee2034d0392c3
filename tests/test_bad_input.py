# ruff: noqa: E501 (the case table reads best one case a line)
"""The bad-input corpus: every way a user's file, model, output path or setting can be wrong.

Each case must end the same way: exit code 2, one message naming the file and line (or the flag),
no traceback unless --debug, and nothing left behind (no output, no `<out>.partial`). A UTF-8 BOM
and CRLF line ends are the deliberate exceptions, accepted with one warning each (docs/formats.md).

The data cases run in-process (through `io.load` and through the stage that reads that kind of
file, whose model argument points nowhere: the data error must come first); a representative
subset runs `python -m alignctl` as a subprocess to check the real exit code and stderr.
All files are generated here; no binary fixtures are committed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from alignctl import io, models, stages
from alignctl.errors import InputError, ModelError
from stage_cases import CASES, write_inputs

OK_PREF = {"prompt": "Is the sky blue?", "chosen": "yes", "rejected": "no"}
OK_PROMPT = {"prompt": "Is the sky blue?"}
OK_CAND = {"id": "a", "prompt": "Is the sky blue?", "completions": ["yes", "no"]}
U = [{"role": "user", "content": "Is the sky blue?"}]
A = [{"role": "assistant", "content": "yes"}]


def jl(*recs: object) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode()


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


def stage_args(kind: str, path: Path, tmp: Path) -> list:
    """The stage that reads `kind`, with a model reference that does not exist (data is checked first)."""
    nowhere = tmp / "no-such-model"
    if kind == "preferences":
        return ["dpo", "--data", path, "--model", nowhere, "-o", tmp / "out"]
    if kind == "prompts":
        return ["grpo", "--prompts", path, "--reward", "rule:length", "--model", nowhere, "-o", tmp / "out"]
    return ["label", "--candidates", path, "--by", "rule:length", "-o", tmp / "out"]


def assert_nothing_left(tmp: Path, before: set[str]) -> None:
    assert {p.name for p in tmp.iterdir()} == before, "output left behind"


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under `root` with its kind, size and mtime: a failed command must change none of them."""
    return {
        str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
        for p in root.rglob("*")
    }


def fails_writing_nothing(cli, tmp: Path, *args) -> str:
    """Run `alignctl *args` in-process from `tmp` (a default output would land there too): exit 2, and
    not one file or dir created, changed or removed under `tmp`. Returns the message."""
    before = snapshot(tmp)
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        code, out, err = cli(*args)
    finally:
        os.chdir(cwd)
    assert code == 2 and out == "", (code, err[-500:])
    assert snapshot(tmp) == before, "a failed command wrote something"
    return err


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
        assert proc.returncode == 2 and message in _one_error_line(proc) and proc.stdout == ""
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
# Models


def _model_dir(tmp: Path, tiny_lm: Path, drop: tuple[str, ...] = (), **config_changes) -> Path:
    import shutil

    d = tmp / "model"
    shutil.copytree(tiny_lm, d)
    for name in drop:
        (d / name).unlink()
    if config_changes:
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(config_changes)
        (d / "config.json").write_text(json.dumps(cfg))
    return d


def _prefs(tmp: Path) -> Path:
    path = tmp / "prefs.jsonl"
    path.write_bytes(jl(OK_PREF, {**OK_PREF, "prompt": "Is grass green?"}))
    return path


def test_missing_model_dir(tmp_path, cli):
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", _prefs(tmp_path), "--model", tmp_path / "nope", "-o", tmp_path / "out"
    )
    assert f"{tmp_path / 'nope'}: model dir not found" in err


def test_model_dir_without_tokenizer(tmp_path, tiny_lm, cli):
    model = _model_dir(tmp_path, tiny_lm, drop=("tokenizer.json", "tokenizer_config.json"))
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", _prefs(tmp_path), "--model", model, "-o", tmp_path / "out"
    )
    assert f"{model}: model dir has no tokenizer" in err


def test_model_dir_without_config(tmp_path, tiny_lm, cli):
    model = _model_dir(tmp_path, tiny_lm, drop=("config.json",))
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", _prefs(tmp_path), "--model", model, "-o", tmp_path / "out"
    )
    assert f"{model}: no config.json" in err


def test_model_path_is_a_file(tmp_path, cli):
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", _prefs(tmp_path), "--model", _prefs(tmp_path), "-o", tmp_path / "out"
    )
    assert "not a directory" in err


def _no_run_no_model(monkeypatch) -> None:
    """A test's proof that an error came first: opening the run or loading a model fails it."""
    from alignctl import runs

    monkeypatch.setattr(runs, "begin", lambda *a, **k: pytest.fail("the run's output was opened"))
    monkeypatch.setattr(models, "load_tokenizer", lambda *a, **k: pytest.fail("a model started loading"))


def test_a_hub_id_offline_and_not_cached_is_one_line_before_anything(tmp_path, cli, monkeypatch):
    _no_run_no_model(monkeypatch)
    args = ("dpo", "--data", _prefs(tmp_path), "--model", "no-org/no-such-model", "-o", tmp_path / "out")
    err = fails_writing_nothing(cli, tmp_path, *args)
    assert "no-org/no-such-model: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set" in err


class _HubWithoutTheRepo:
    """A stand-in for the Hugging Face Hub on 127.0.0.1 that has no repository at all (404 with the
    hub's RepoNotFound code), counting the requests it gets."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self
        self.requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 (http.server's naming)
                outer.requests.append(f"{self.command} {self.path}")
                body = b'{"error": "Repository not found"}'
                self.send_response(404)
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_a_hub_id_the_hub_does_not_have_is_one_line_before_anything(tmp_path, cli, monkeypatch):
    import huggingface_hub.constants

    hub = _HubWithoutTheRepo()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read at its import
        _no_run_no_model(monkeypatch)
        args = ("dpo", "--data", _prefs(tmp_path), "--model", "no-org/no-such-model", "-o", tmp_path / "out")
        err = fails_writing_nothing(cli, tmp_path, *args)
    finally:
        hub.close()
    assert "no-org/no-such-model: no such model on the Hugging Face Hub" in err
    assert [r for r in hub.requests if "/models/" in r] == ["GET /api/models/no-org/no-such-model"], hub.requests


def test_a_hub_dataset_the_hub_does_not_have_is_one_line_after_one_request(tmp_path, cli, monkeypatch):
    import huggingface_hub.constants

    hub = _HubWithoutTheRepo()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        _no_run_no_model(monkeypatch)
        err = fails_writing_nothing(cli, tmp_path, "dpo", "--data", "no-org/no-prefs", "--split", "train")
    finally:
        hub.close()
    assert "no-org/no-prefs: no such dataset on the Hugging Face Hub" in err
    assert hub.requests == ["GET /api/datasets/no-org/no-prefs"], hub.requests


def test_subprocess_no_network_is_one_line_at_once(tmp_path, run):
    """The hub out of reach (here: a port nobody listens on): one line within seconds, not a
    minute of retries per file, and nothing written."""
    import time

    env = {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"}
    prefs = _prefs(tmp_path)
    before = snapshot(tmp_path)
    start = time.monotonic()
    proc = run("dpo", "--data", prefs, "--model", "no-org/no-such-model", "-o", tmp_path / "out", env=env, cwd=tmp_path)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2 and "cannot reach the Hugging Face Hub" in _one_error_line(proc), proc.stderr[-2000:]
    others = [ln for ln in proc.stderr.splitlines() if not ln.startswith(("error:", "note: eval_steps"))]
    assert others == [], proc.stderr[-2000:]  # no retry messages
    assert elapsed < 40, elapsed  # start-up included; the retries took 50 s before
    assert snapshot(tmp_path) == before


def test_subprocess_no_network_for_a_hub_dataset_is_one_line_at_once(tmp_path, run):
    """The same for a hub dataset id: datasets alone retried five times (25 s of messages here)."""
    import time

    env = {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"}
    before = snapshot(tmp_path)
    start = time.monotonic()
    proc = run("dpo", "--data", "no-org/no-prefs", "--split", "train", "-o", tmp_path / "out", env=env, cwd=tmp_path)
    elapsed = time.monotonic() - start
    line = _one_error_line(proc)
    assert proc.returncode == 2 and "cannot reach the Hugging Face Hub for this dataset" in line, proc.stderr[-2000:]
    assert "no copy is in the local cache" in line and "OfflineModeIsEnabled" not in line, line
    assert [ln for ln in proc.stderr.splitlines() if not ln.startswith("error:")] == [], proc.stderr[-2000:]
    assert elapsed < 20, elapsed
    assert snapshot(tmp_path) == before


def test_reward_model_with_two_labels(tmp_path, tiny_lm):
    model = _model_dir(
        tmp_path, tiny_lm, architectures=["LlamaForSequenceClassification"], id2label={"0": "bad", "1": "good"}
    )
    with pytest.raises(ModelError, match="reward model has num_labels=2; a reward model needs num_labels=1"):
        models.load_reward_model(str(model))


def test_reward_model_config_not_json(tmp_path, tiny_lm):
    model = _model_dir(tmp_path, tiny_lm)
    (model / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="config.json: not a readable JSON config"):
        models.load_reward_model(str(model))


# ---------------------------------------------------------------------------------------------
# Outputs


def test_existing_output_without_overwrite(tmp_path, tiny_lm, cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    err = fails_writing_nothing(cli, tmp_path, "dpo", "--data", _prefs(tmp_path), "--model", tiny_lm, "-o", out)
    assert f"{out}: already exists (not an alignctl run); pass --overwrite to replace it" in err
    assert (out / "notes.txt").read_text() == "mine"


def test_existing_output_of_a_different_run(tmp_path, tiny_lm, cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "alignctl.json").write_text(json.dumps({"stage": "dpo", "fingerprint": "other"}))
    err = fails_writing_nothing(cli, tmp_path, "dpo", "--data", _prefs(tmp_path), "--model", tiny_lm, "-o", out)
    assert "already exists (a different run); pass --overwrite" in err


def test_output_path_is_a_file(tmp_path, tiny_lm, cli):
    (tmp_path / "out").write_text("a file")
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", _prefs(tmp_path), "--model", tiny_lm, "-o", tmp_path / "out"
    )
    assert "exists and is not a directory" in err


def test_output_under_a_file(tmp_path, tiny_lm, cli):
    """An output dir that cannot be created (its parent is a file): the portable 'unwritable' case."""
    (tmp_path / "blocker").write_text("a file")
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", _prefs(tmp_path), "--model", tiny_lm, "-o", tmp_path / "blocker" / "out"
    )
    assert "cannot create output directory" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output_dir(tmp_path, tiny_lm, cli):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        err = fails_writing_nothing(
            cli, tmp_path, "dpo", "--data", _prefs(tmp_path), "--model", tiny_lm, "-o", locked / "out"
        )
        assert f"{locked}: output directory is not writable" in err
    finally:
        locked.chmod(0o755)


def _can_mount_read_only(probe: Path) -> bool:
    import subprocess

    script = f"mount --bind -o ro {probe} {probe} && ! touch {probe}/x 2>/dev/null"
    try:
        return (
            subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, timeout=30).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_read_only_output_dir(tmp_path, tiny_lm):
    """The same error as above where chmod cannot make it (root writes through 0555): the output's
    parent is a read-only bind mount in a private mount namespace (`unshare --mount`)."""
    import shlex
    import subprocess
    import sys

    locked = tmp_path / "locked"
    locked.mkdir()
    if not _can_mount_read_only(locked):
        pytest.skip("no private mount namespace here (unshare --mount needs root or user namespaces)")
    prefs = _prefs(tmp_path)
    before = snapshot(tmp_path)
    cmd = [sys.executable, "-m", "alignctl", "dpo", "--data", prefs, "--model", tiny_lm, "-o", locked / "out"]
    script = f"mount --bind -o ro {locked} {locked} && exec {shlex.join(str(c) for c in cmd)}"
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and f"{locked}: output directory is not writable" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and snapshot(tmp_path) == before


def test_file_output_that_is_a_directory(tmp_path, cli):
    cands = tmp_path / "c.jsonl"
    cands.write_bytes(jl(OK_CAND))
    (tmp_path / "prefs.jsonl").mkdir()
    err = fails_writing_nothing(
        cli, tmp_path, "label", "--candidates", cands, "--by", "rule:length", "-o", tmp_path / "prefs.jsonl"
    )
    assert "is a directory" in err


# ---------------------------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "betta=0.2"], "--set betta: unknown key 'betta' for dpo; did you mean 'beta'?"),
        (["--set", "beta=abc"], "--set beta=abc: beta must be a number, got 'abc'"),
        (["--set", "beta"], "--set beta: expected key=value"),
        (["--set", "lora_r=1.5"], "lora_r must be an integer"),
        (["--set", "learning_rate=nan"], "learning_rate must be a finite number"),
        (["--set", "use_peft=maybe"], "use_peft must be true/false"),
        (["--preset", "dpo-cpx"], "--preset dpo-cpx: no such preset; did you mean 'dpo-cpu'?"),
        (["--preset", "grpo"], "--preset grpo: it is a preset for 'grpo', not 'dpo'"),
        (["--eval-split", "1.5"], "--eval-split: eval_split must be in [0, 1) or a file that exists, got '1.5'"),
        (["--eval-split", "held-out.jsonl"], "held-out.jsonl: file not found"),
        # each setting against its domain (domains.py), before any model loads
        (["--beta", "-1"], "--beta: beta must be > 0, got -1.0"),
        (["--beta", "0"], "--beta: beta must be > 0, got 0.0"),
        (["--learning-rate", "-1"], "--learning-rate: learning_rate must be > 0, got -1.0"),
        (["--batch-size", "0"], "--batch-size: per_device_train_batch_size must be >= 1, got 0"),
        (["--lora-r", "0"], "--lora-r: lora_r must be >= 1, got 0"),
        (["--epochs", "0"], "--epochs: num_train_epochs must be > 0, got 0.0"),
        (["--max-steps", "0"], "--max-steps: max_steps must be -1 or >= 1, got 0"),
        (["--seed", "-1"], "--seed: seed must be in [0, 4294967295], got -1"),
        (["--set", "label_smoothing=0.7"], "--set label_smoothing=0.7: label_smoothing must be in [0, 0.5), got 0.7"),
        (["--set", "lora_dropout=1"], "--set lora_dropout=1: lora_dropout must be in [0, 1), got 1.0"),
        (["--set", "adam_beta2=1.5"], "--set adam_beta2=1.5: adam_beta2 must be in [0, 1), got 1.5"),
        (["--set", "warmup_steps=-5"], "warmup_steps must be >= 0, got -5.0"),
        (["--set", "optim=adam"], "--set optim=adam: optim must be one of adamw_torch, "),
        (["--set", "lr_scheduler_type=cosin"], "did you mean 'cosine'?"),
        (["--loss-type", "sigmod"], "--loss-type: loss_type must be one of sigmoid, hinge, ipo"),
        (["--set", "ref_model=./no-such-ref"], "--set ref_model=./no-such-ref: ./no-such-ref: no such model"),
        (["--set", "deepspeed=ds_z3.json"], "--set deepspeed=ds_z3.json: ds_z3.json: file not found"),
        (
            ["--beta", "-1", "--seed", "-2"],
            "beta must be > 0, got -1.0; --seed: seed must be in [0, 4294967295], got -2",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_bad_settings(extra, message, tmp_path, tiny_lm, cli):
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", _prefs(tmp_path), "--model", tiny_lm, "-o", tmp_path / "out", *extra
    )
    assert message in err, err


def _prompts(tmp: Path, **columns) -> Path:
    path = tmp / "prompts.jsonl"
    path.write_bytes(jl({"prompt": "What is 2 + 2?", **columns}, {"prompt": "What is 3 + 3?", **columns}))
    return path


# (argv after the stage, built from the prompts file, message): settings of the stages that sample
OTHER_STAGE_SETTINGS = [
    (["grpo", "--reward", "rule:length", "--set", "num_generations=1"], "--set num_generations=1: num_generations must be >= 2, got 1"),
    (["grpo", "--reward", "rule:length", "--temperature", "0"], "--temperature: temperature must be > 0, got 0.0"),
    (["grpo", "--reward", "rule:length", "--set", "beta=-0.1"], "--set beta=-0.1: beta must be >= 0, got -0.1"),
    (["grpo", "--reward", "rule:length", "--set", "scale_rewards=std"], "scale_rewards must be one of group, batch, none, got 'std'"),
    (["online-dpo", "--reward", "rule:length", "--set", "loss_type=hinge"], "loss_type must be one of sigmoid, ipo, got 'hinge'"),
    (["online-dpo", "--reward", "rule:length", "--max-new-tokens", "0"], "--max-new-tokens: max_new_tokens must be >= 1, got 0"),
    (["ppo", "--reward", "rule:length", "--set", "gamma=1.5"], "--set gamma=1.5: gamma must be in [0, 1], got 1.5"),
    (["ppo", "--reward", "rule:length", "--top-p", "0"], "--top-p: top_p must be in (0, 1], got 0.0"),
    (["collect", "--top-p", "1.5"], "--top-p: top_p must be in (0, 1], got 1.5"),
    (["collect", "--num-samples", "0"], "--num-samples: num_samples must be >= 1, got 0"),
    (["iterate", "--by", "rule:length", "--num-samples", "1"], "--num-samples: num_samples must be >= 2, got 1"),
    (["iterate", "--by", "rule:length", "--dpo-preset", "dpo-cpx"], "--dpo-preset: dpo-cpx: no such preset"),
    (["eval", "--by", "rule:length", "--set", "tie_margin=-1"], "--set tie_margin=-1: tie_margin must be >= 0, got -1.0"),
]  # fmt: skip


@pytest.mark.parametrize(
    "argv, message", OTHER_STAGE_SETTINGS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in OTHER_STAGE_SETTINGS]
)
def test_bad_settings_of_the_sampling_stages(argv, message, tmp_path, tiny_lm, cli):
    stage, *rest = argv
    model = ["--model", tiny_lm] if stage != "eval" else ["--model", tiny_lm, "--baseline", tiny_lm]
    err = fails_writing_nothing(
        cli, tmp_path, stage, "--prompts", _prompts(tmp_path), *model, *rest, "-o", tmp_path / "out"
    )
    assert message in err, err


# a file of another kind where prompts are wanted, and a reward that reads a column the prompts lack
PREFS_AS_PROMPTS = 'a file of preference pairs (its records have "chosen", "rejected"), but this input takes prompts'
INPUT_CASES = [
    (["grpo", "--reward", "rule:accuracy"], "prefs", PREFS_AS_PROMPTS),
    (["collect"], "prefs", PREFS_AS_PROMPTS),
    (["online-dpo", "--reward", "rule:length"], "prefs", PREFS_AS_PROMPTS),
    (["ppo", "--reward", "rule:length"], "prefs", PREFS_AS_PROMPTS),
    (["iterate", "--by", "rule:length"], "prefs", PREFS_AS_PROMPTS),
    (["eval", "--by", "rule:length", "--baseline", "./no-such-baseline"], "prefs", PREFS_AS_PROMPTS),
    (["grpo", "--reward", "rule:accuracy"], "no-answer", "record 1: rule:accuracy needs the `answer` column, and 2 of 2 records lack it"),
    (["grpo", "--reward", "rule:length", "--reward", "rule:qa?column=gold"], "no-answer", "rule:qa?column=gold needs the `gold` column"),
    (["online-dpo", "--reward", "rule:qa"], "no-answer", "rule:qa needs the `answer` column"),
    (["ppo", "--reward", "rule:contains"], "no-answer", "rule:contains needs the `answer` column"),
    (["iterate", "--by", "rule:qa"], "no-answer", "rule:qa needs the `answer` column"),
    (["eval", "--by", "rule:qa_strict", "--baseline", "./no-such-baseline"], "no-answer", "rule:qa_strict needs the `answer` column"),
    (["grpo", "--reward", "rule:accuracy"], "empty-answer", "record 1: rule:accuracy needs the `answer` column, and 2 of 2 records lack it or leave it empty"),
]  # fmt: skip


@pytest.mark.parametrize("argv, data, message", INPUT_CASES, ids=[f"{a[0]}-{a[-1]}-{d}" for a, d, _ in INPUT_CASES])
def test_an_input_the_stage_cannot_use(argv, data, message, tmp_path, tiny_lm, cli):
    """Found on the records before any model loads (the stage's model points nowhere to prove it)."""
    stage, *rest = argv
    if data == "prefs":
        path = _prefs(tmp_path)
    else:
        path = _prompts(tmp_path, **({"answer": " "} if data == "empty-answer" else {}))
    err = fails_writing_nothing(
        cli, tmp_path, stage, "--prompts", path, "--model", tmp_path / "no-such-model", *rest, "-o", tmp_path / "out"
    )
    assert message in err, err


def test_a_candidates_file_without_the_answer_column_is_refused_by_label(tmp_path, cli):
    cands = tmp_path / "c.jsonl"
    cands.write_bytes(jl(OK_CAND))
    err = fails_writing_nothing(
        cli, tmp_path, "label", "--candidates", cands, "--by", "rule:qa", "-o", tmp_path / "p.jsonl"
    )
    assert "record 1: rule:qa needs the `answer` column" in err


@pytest.mark.parametrize(
    "text, message",
    [
        ("betta: 0.2\n", ":1: unknown key 'betta' for dpo; did you mean 'beta'?"),
        ("beta: 0.1\nlearning_rate: 1.0e-5\nbetta: 0.2\n", ":3: unknown key 'betta' for dpo"),
        ("# mine\nvalues:\n  beta: 0.1\n\n  betta: 0.2\n", ":5: unknown key 'betta' for dpo"),
        ("beta: 0.1\nloss_type: [1, 2]\n", ":2: loss_type must be"),
        ("beta: [1, 2]\n", ":1: beta must be a number"),
        ("beta: 0.1\n  lr: 2\n", ":2: invalid YAML"),
        ("- beta\n- 0.1\n", ": config must be a mapping of key: value"),
        ("beta: !!timestamp 2001-02-30\n", ": invalid YAML value"),
        ("beta: 0.1\nlearning_rate: -1.0e-5\n", ":2: learning_rate must be > 0, got -1e-05"),
        ("values:\n  per_device_train_batch_size: 0\n", ":2: per_device_train_batch_size must be >= 1, got 0"),
        ("optim: adamw\n", ":1: optim must be one of"),
        (
            "beta: 0.1\nbetta: 0.2\npush_to_hub: true\n",
            ": 2 keys alignctl cannot honour: line 2: unknown key 'betta' for dpo; did you mean 'beta'?; "
            "line 3: push_to_hub: True: alignctl writes a local model dir",
        ),
    ],
)
def test_bad_config_file(text, message, tmp_path, tiny_lm, cli):
    """Named as file:line where a line is to blame, in-process and through the command (which writes nothing)."""
    cfg = tmp_path / "my.yaml"
    cfg.write_text(text)
    with pytest.raises(InputError) as exc:
        stages.resolve("dpo", config_file=cfg)
    assert str(exc.value).startswith(f"{cfg}{message}"), str(exc.value)
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", _prefs(tmp_path), "--model", tiny_lm, "--config", cfg, "-o", tmp_path / "out"
    )
    assert f"{cfg}{message}" in err


def test_preset_file_with_unknown_key(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("stage: dpo\nvalues:\n  beta: 0.2\n  lerning_rate: 1.0e-5\n")
    with pytest.raises(InputError, match=r"unknown key 'lerning_rate' for dpo; did you mean 'learning_rate'\?"):
        stages.resolve("dpo", preset=str(preset))


def test_missing_config_file(tmp_path, tiny_lm, cli):
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", _prefs(tmp_path), "--model", tiny_lm, "--config", tmp_path / "nope.yaml"
    )
    assert "nope.yaml: file not found" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["dpo", "--data", "p.jsonl", "--beta", "abc"], "Invalid value for '--beta'"),
        (["dpo", "--data", "p.jsonl", "--betta", "0.1"], "No such option: --betta"),
        (["dpo"], "Missing option '--data'"),
        (["validate", "p.jsonl", "--kind", "prefs"], "--kind prefs: expected one of prompts, candidates, preferences"),
    ],
)
def test_usage_errors(argv, message, tmp_path, cli):
    _prefs(tmp_path).rename(tmp_path / "p.jsonl")
    err = fails_writing_nothing(cli, tmp_path, *argv)
    assert message in err, err


# ---------------------------------------------------------------------------------------------
# The real entry point: exit code, one line on stderr, no traceback, nothing left behind


def _one_error_line(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


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
    line_text = _one_error_line(proc)
    assert line_text.startswith(f"error: {path}:{line}: ") and message in line_text
    assert proc.stdout == ""
    assert_nothing_left(tmp_path, before)


def test_subprocess_settings_and_outputs(tmp_path, tiny_lm, run):
    prefs = _prefs(tmp_path)
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
        assert proc.returncode == 2 and message in _one_error_line(proc), proc.stderr[-1000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefs.jsonl", "taken"]
    assert list((tmp_path / "taken").iterdir()) == []


def test_subprocess_broken_weights_leave_no_partial_dir(tmp_path, tiny_lm, run):
    """The one error found after the run dir exists (weights are read last): the empty dir goes."""
    model = _model_dir(tmp_path, tiny_lm)
    (model / "model.safetensors").write_bytes(b"\x00" * 64)
    proc = run("dpo", "--data", _prefs(tmp_path), "--model", model, "-o", tmp_path / "out")
    assert proc.returncode == 2
    assert "cannot load as a causal LM" in _one_error_line(proc)
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
