"""What the bad-input tests share: small valid records, a JSONL writer, and the check that a
refused command exits 2 having written nothing (tests/test_bad_*.py, and each stage's own tests)."""

from __future__ import annotations

import json
import os
from pathlib import Path

OK_PREF = {"prompt": "Is the sky blue?", "chosen": "yes", "rejected": "no"}
OK_PROMPT = {"prompt": "Is the sky blue?"}
OK_CAND = {"id": "a", "prompt": "Is the sky blue?", "completions": ["yes", "no"]}
U = [{"role": "user", "content": "Is the sky blue?"}]
A = [{"role": "assistant", "content": "yes"}]


def jl(*recs: object) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode()


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


def model_dir(tmp: Path, tiny_lm: Path, drop: tuple[str, ...] = (), **config_changes) -> Path:
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


def write_prefs(tmp: Path) -> Path:
    path = tmp / "prefs.jsonl"
    path.write_bytes(jl(OK_PREF, {**OK_PREF, "prompt": "Is grass green?"}))
    return path


def one_error_line(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]
