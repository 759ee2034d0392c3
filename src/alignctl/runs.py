"""Run directories and manifests: where a stage writes, "up to date" checks, and `alignctl.json`.

A stage writes into `<out>.partial/` and renames it to `<out>` only when everything is in place, so
an output dir that exists is complete; a crash leaves only the `.partial` dir, which `--resume`
continues from (its checkpoints) and any other rerun replaces. The manifest records a fingerprint
of the inputs and resolved config; a rerun with the same fingerprint is "up to date" and does no
work unless `--force` (Makefiles rely on this).

Every manifest (run dirs here, file outputs in `file_runs.py`, eval, iterate) is written by
`write_manifest` in one schema and read by `read_manifest` (stages, iterate, report).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignctl import __version__
from alignctl.console import info, note
from alignctl.errors import InputError, OutputError
from alignctl.io import sha256_file, write_json

if TYPE_CHECKING:
    from alignctl.config import Resolved

MANIFEST = "alignctl.json"
METRICS = "metrics.jsonl"
# settings that change where/how a run is reported, not what it computes
# how a run is carried out, not what it makes: a rerun that changes them resumes the same output
NON_FINGERPRINT_KEYS = {
    "report_to",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "max_concurrency",
    "request_timeout",
    "max_retries",
    "api_key_env",
}
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")
_CREATED: list[Path] = []  # work dirs this process created (see discard_unused)


def is_main_process() -> bool:
    """Rank 0 (or a single process): the only one that writes outputs."""
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") in ("0", "-1")


def close_process_group() -> None:
    """Shut torch.distributed down before the interpreter exits, on every rank.

    Left open, gloo's threads are still alive while Python tears down, and a rank can abort after
    its work is done ("terminate called without an active exception", SIGABRT: 1 of 9 `accelerate
    launch` runs here), which fails a `set -e` pipeline. No barrier: a rank that failed must not
    leave the others waiting, and nothing is in flight once a stage has returned."""
    torch = sys.modules.get("torch")  # a process that never imported torch has no group to close
    if torch is None:
        return
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """Processes in this run (torchrun / accelerate launch set WORLD_SIZE); 1 when run plainly."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def discard_unused() -> None:
    """Remove the work dirs this process created but never wrote into.

    `cli.main` calls this on an error: a bad model or setting found after `begin` then leaves no
    empty `<out>.partial` behind, while a dir holding checkpoints or a journal stays for --resume.
    """
    while _CREATED:
        try:
            _CREATED.pop().rmdir()  # rmdir only removes an empty dir
        except OSError:
            pass


def input_fingerprint(path: str | Path) -> dict[str, str]:
    """What identifies an input: a file's sha256, a model dir's manifest hash, or a reference."""
    p = Path(path)
    if p.is_file():
        return {"path": str(p), "sha256": sha256_file(p)}
    if p.is_dir():
        m = p / MANIFEST
        if m.is_file():
            return {"path": str(p), "manifest_sha256": sha256_file(m)}
        cfg = p / "config.json"
        stamp = str(cfg.stat().st_mtime_ns) if cfg.exists() else ""
        return {"path": str(p), "config_mtime": stamp}
    return {"ref": str(path)}


def fingerprint(stage: str, inputs: dict[str, Any], resolved: Resolved | None, extra: dict | None = None) -> str:
    blob = {
        "stage": stage,
        "inputs": inputs,
        "config": {k: v for k, v in (resolved.values if resolved else {}).items() if k not in NON_FINGERPRINT_KEYS},
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def manifest_path(out: str | Path, *, file_output: bool = False) -> Path:
    """Where `out`'s manifest is: inside a run dir, or beside a file output (`prefs.jsonl.alignctl.json`)."""
    out = Path(out)
    return out.with_name(out.name + "." + MANIFEST) if file_output else out / MANIFEST


def read_manifest(out: str | Path, *, file_output: bool = False, strict: bool = False) -> dict | None:
    """The manifest of a run dir (or, with `file_output`, of a file output), or None if there is none.

    An unreadable or corrupt manifest is None too (a rerun then treats the output as foreign);
    with `strict` it is an InputError naming the file (`report` reads what it is pointed at).
    Manifests of older versions are read too: iterate wrote `updated` for `finished`.
    """
    path = manifest_path(out, file_output=file_output)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # ValueError: bad JSON, bad UTF-8, not an object
        if strict:
            raise InputError(f"{path}: not a readable manifest: {exc}") from None
        return None
    if "finished" not in data and "updated" in data:
        data["finished"] = data["updated"]
    return data


def write_manifest(
    path: Path,
    *,
    stage: str,
    started: float,
    resolved: Resolved | None,
    inputs: dict[str, Any],
    fingerprint: str,
    parent_model: str | None = None,
    final_metrics: dict | None = None,
    output: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """Write `path` (atomically) in the one manifest schema every stage uses; returns what it wrote.

    `output` describes a file output (path, records, sha256: what "up to date" checks); `extra`
    holds a stage's own keys (records counts, reward sources, iterate's rounds).
    """
    manifest = {
        "stage": stage,
        "alignctl_version": __version__,
        "command": sys.argv,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": round(time.time() - started, 2),
        "preset": resolved.preset if resolved else None,
        "config": resolved.manifest() if resolved else {},
        "inputs": inputs,
        "parent_model": parent_model,
        "libraries": library_versions(),
        "world_size": world_size(),
        **({"output": output} if output is not None else {}),
        "final_metrics": final_metrics or {},
        "fingerprint": fingerprint,
        **(extra or {}),
    }
    write_json(path, manifest)
    return manifest


def claim(out: Path, stage: str, **fields: Any) -> None:
    """Mark a dir as `stage`'s before any work (a placeholder manifest: only `stage` and `fields`),
    so a run killed before its first write_manifest is still recognised as ours on rerun."""
    write_json(out / MANIFEST, {"stage": stage, **fields})


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"alignctl": __version__, "python": sys.version.split()[0]}
    for lib in LIBRARIES:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            pass
    return out


@dataclass
class Run:
    """One stage's output: `out` when done, `work` (= `<out>.partial`) while it runs."""

    stage: str
    out: Path
    work: Path
    fingerprint: str
    inputs: dict[str, Any]
    resolved: Resolved | None
    parent_model: str | None = None
    up_to_date: bool = False
    resume_from: Path | None = None
    started: float = field(default_factory=time.time)

    @property
    def metrics_path(self) -> Path:
        return self.work / METRICS

    def finish(self, final_metrics: dict | None = None, extra: dict | None = None) -> Path:
        """Write the manifest and move the finished dir into place (rank 0 only)."""
        if not is_main_process():
            return self.out
        write_manifest(self.work / MANIFEST, **identity(self), final_metrics=final_metrics, extra=extra)
        crash_point("run-rename")
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.work, self.out)
        return self.out


def begin(
    stage: str,
    out: str | Path,
    *,
    inputs: dict[str, Any],
    resolved: Resolved | None,
    overwrite: bool = False,
    force: bool = False,
    resume: bool = False,
    parent_model: str | None = None,
    extra: dict | None = None,
) -> Run:
    """Decide what to do with `out` before any compute starts; never touches it if input is bad."""
    out = Path(out)
    work = out.with_name(out.name + ".partial")
    fp = fingerprint(stage, inputs, resolved, extra)
    run = Run(stage, out, work, fp, inputs, resolved, parent_model)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    finished = read_manifest(work) if work.is_dir() else None
    if finished and finished.get("fingerprint") == fp and not (force or overwrite) and is_main_process():
        # killed between writing the manifest and the rename (Run.finish): the run is complete
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
        note(f"finished the rename of an earlier complete run: {work} -> {out}")
    if out.exists():
        manifest = read_manifest(out)
        if manifest and manifest.get("fingerprint") == fp and not (force or overwrite):
            run.up_to_date = True
            return run
        if not overwrite and not force:
            what = "a different run" if manifest else "not an alignctl run"
            raise OutputError(f"{out}: already exists ({what}); pass --overwrite to replace it")
    # only rank 0 touches the file system: other ranks of a torchrun / accelerate launch job make
    # the same decisions from the same files, and must not race rank 0's mkdir / rmtree
    if is_main_process():
        check_writable(out.parent)
    if work.exists():
        checkpoint = last_checkpoint(work)
        if resume and checkpoint:
            run.resume_from = checkpoint
            note(f"resuming from {checkpoint}")
            return run
        if resume:
            note(f"--resume: no checkpoint in {work}; starting from the beginning")
        elif is_main_process():
            note(f"removing an unfinished earlier run in {work}")
        if is_main_process():
            shutil.rmtree(work, ignore_errors=True)
    elif resume:
        note(f"--resume: nothing to resume in {work}; starting from the beginning")
    if is_main_process():
        work.mkdir(parents=True, exist_ok=True)
        _CREATED.append(work)
    return run


def crash_point(name: str) -> None:
    """A test aid: SIGKILL this process at the named point when ALIGNCTL_CRASH_AT=name, so a test
    sees exactly what a kill there leaves behind (a preempted job, an OOM kill)."""
    if os.environ.get("ALIGNCTL_CRASH_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def check_writable(parent: Path) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{parent}: cannot create output directory: {exc.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{parent}: output directory is not writable")


def last_checkpoint(work: Path) -> Path | None:
    """The newest complete `checkpoint-N` dir (trainer_state.json written) under `work`."""
    best, best_step = None, -1
    for d in work.glob("checkpoint-*"):
        try:
            step = int(d.name.split("-", 1)[1])
        except ValueError:
            continue
        if (d / "trainer_state.json").is_file() and step > best_step:
            best, best_step = d, step
    return best


def say_up_to_date(run: Run) -> None:
    info(f"[green]up to date:[/] {run.out} (same inputs and config; --force to redo)")


def identity(run) -> dict[str, Any]:
    """What a run's manifest says about it besides its results (a `Run` or a `file_runs.FileRun`)."""
    return {
        "stage": run.stage,
        "started": run.started,
        "resolved": run.resolved,
        "inputs": run.inputs,
        "fingerprint": run.fingerprint,
        "parent_model": run.parent_model,
    }
