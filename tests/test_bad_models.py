"""The bad-input corpus, models and outputs: a model dir or hub id that cannot load, an output path
that cannot be written or belongs to another run. Each case: exit 2, one line, nothing left behind
(the rules in tests/test_bad_input.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from alignctl import models
from alignctl.errors import ModelError
from refusals import (
    OK_CAND,
    fails_writing_nothing,
    jl,
    model_dir,
    one_error_line,
    snapshot,
    write_prefs,
)

# ---------------------------------------------------------------------------------------------
# Models


def test_missing_model_dir(tmp_path, cli):
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", write_prefs(tmp_path), "--model", tmp_path / "nope", "-o", tmp_path / "out"
    )
    assert f"{tmp_path / 'nope'}: model dir not found" in err


def test_model_dir_without_tokenizer(tmp_path, tiny_lm, cli):
    model = model_dir(tmp_path, tiny_lm, drop=("tokenizer.json", "tokenizer_config.json"))
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", write_prefs(tmp_path), "--model", model, "-o", tmp_path / "out"
    )
    assert f"{model}: model dir has no tokenizer" in err


def test_model_dir_without_config(tmp_path, tiny_lm, cli):
    model = model_dir(tmp_path, tiny_lm, drop=("config.json",))
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", write_prefs(tmp_path), "--model", model, "-o", tmp_path / "out"
    )
    assert f"{model}: no config.json" in err


def test_model_path_is_a_file(tmp_path, cli):
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", write_prefs(tmp_path), "--model", write_prefs(tmp_path), "-o", tmp_path / "out"
    )
    assert "not a directory" in err


def _no_run_no_model(monkeypatch) -> None:
    """A test's proof that an error came first: opening the run or loading a model fails it."""
    from alignctl import runs

    monkeypatch.setattr(runs, "begin", lambda *a, **k: pytest.fail("the run's output was opened"))
    monkeypatch.setattr(models, "load_tokenizer", lambda *a, **k: pytest.fail("a model started loading"))


def test_a_hub_id_offline_and_not_cached_is_one_line_before_anything(tmp_path, cli, monkeypatch):
    _no_run_no_model(monkeypatch)
    args = ("dpo", "--data", write_prefs(tmp_path), "--model", "no-org/no-such-model", "-o", tmp_path / "out")
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
        args = ("dpo", "--data", write_prefs(tmp_path), "--model", "no-org/no-such-model", "-o", tmp_path / "out")
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
    prefs = write_prefs(tmp_path)
    before = snapshot(tmp_path)
    start = time.monotonic()
    proc = run("dpo", "--data", prefs, "--model", "no-org/no-such-model", "-o", tmp_path / "out", env=env, cwd=tmp_path)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2 and "cannot reach the Hugging Face Hub" in one_error_line(proc), proc.stderr[-2000:]
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
    line = one_error_line(proc)
    assert proc.returncode == 2 and "cannot reach the Hugging Face Hub for this dataset" in line, proc.stderr[-2000:]
    assert "no copy is in the local cache" in line and "OfflineModeIsEnabled" not in line, line
    assert [ln for ln in proc.stderr.splitlines() if not ln.startswith("error:")] == [], proc.stderr[-2000:]
    assert elapsed < 20, elapsed
    assert snapshot(tmp_path) == before


def test_reward_model_with_two_labels(tmp_path, tiny_lm):
    model = model_dir(
        tmp_path, tiny_lm, architectures=["LlamaForSequenceClassification"], id2label={"0": "bad", "1": "good"}
    )
    with pytest.raises(ModelError, match="reward model has num_labels=2; a reward model needs num_labels=1"):
        models.load_reward_model(str(model))


def test_reward_model_config_not_json(tmp_path, tiny_lm):
    model = model_dir(tmp_path, tiny_lm)
    (model / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="config.json: not a readable JSON config"):
        models.load_reward_model(str(model))


# ---------------------------------------------------------------------------------------------
# Outputs


def test_existing_output_without_overwrite(tmp_path, tiny_lm, cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    err = fails_writing_nothing(cli, tmp_path, "dpo", "--data", write_prefs(tmp_path), "--model", tiny_lm, "-o", out)
    assert f"{out}: already exists (not an alignctl run); pass --overwrite to replace it" in err
    assert (out / "notes.txt").read_text() == "mine"


def test_existing_output_of_a_different_run(tmp_path, tiny_lm, cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "alignctl.json").write_text(json.dumps({"stage": "dpo", "fingerprint": "other"}))
    err = fails_writing_nothing(cli, tmp_path, "dpo", "--data", write_prefs(tmp_path), "--model", tiny_lm, "-o", out)
    assert "already exists (a different run); pass --overwrite" in err


def test_output_path_is_a_file(tmp_path, tiny_lm, cli):
    (tmp_path / "out").write_text("a file")
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", write_prefs(tmp_path), "--model", tiny_lm, "-o", tmp_path / "out"
    )
    assert "exists and is not a directory" in err


def test_output_under_a_file(tmp_path, tiny_lm, cli):
    """An output dir that cannot be created (its parent is a file): the portable 'unwritable' case."""
    (tmp_path / "blocker").write_text("a file")
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", write_prefs(tmp_path), "--model", tiny_lm, "-o", tmp_path / "blocker" / "out"
    )
    assert "cannot create output directory" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output_dir(tmp_path, tiny_lm, cli):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        err = fails_writing_nothing(
            cli, tmp_path, "dpo", "--data", write_prefs(tmp_path), "--model", tiny_lm, "-o", locked / "out"
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
    prefs = write_prefs(tmp_path)
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
