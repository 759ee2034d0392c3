"""Run directories and manifests: where a stage writes, "up to date" checks, and `alignctl.json`.

A stage writes into `<out>.partial/` and renames it to `<out>` only when everything is in place, so
an output dir that exists is complete; a crash leaves only the `.partial` dir, which `--resume`
continues from (its checkpoints) and any other rerun replaces. The manifest records a fingerprint
of the inputs and resolved config; a rerun with the same fingerprint is "up to date" and does no
work unless `--force` (Makefiles rely on this).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignctl import __version__
from alignctl.console import info, note
from alignctl.errors import OutputError
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


def read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


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
        manifest = {
            "stage": self.stage,
            "alignctl_version": __version__,
            "command": sys.argv,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "wall_seconds": round(time.time() - self.started, 2),
            "preset": self.resolved.preset if self.resolved else None,
            "config": self.resolved.manifest() if self.resolved else {},
            "inputs": self.inputs,
            "parent_model": self.parent_model,
            "libraries": library_versions(),
            "final_metrics": final_metrics or {},
            "fingerprint": self.fingerprint,
            "world_size": world_size(),
            **(extra or {}),
        }
        write_json(self.work / MANIFEST, manifest)
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
        _check_writable(out.parent)
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


def _check_writable(parent: Path) -> None:
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


# ---------------------------------------------------------------------------------------------
# File outputs (JSONL written by collect / label): a journal while running, a sidecar manifest after

JOURNAL_HEADER = "_alignctl_journal"


def file_manifest_path(out: str | Path) -> Path:
    """The manifest of a file output sits beside it: `prefs.jsonl` -> `prefs.jsonl.alignctl.json`."""
    out = Path(out)
    return out.with_name(out.name + ".alignctl.json")


@dataclass
class FileRun:
    """One stage's file output: `out` when done; `journal` (= `<out>.partial`) while it runs.

    The journal is append-only (`io.Appender`, fsynced per record); its first line names the
    run's fingerprint, so a rerun with the same inputs and config continues from `journal_records`
    and any other rerun starts afresh. `finish` writes the output atomically, then the manifest.
    """

    stage: str
    out: Path
    journal: Path
    fingerprint: str
    inputs: dict[str, Any]
    resolved: Resolved | None
    parent_model: str | None = None
    up_to_date: bool = False
    journal_records: list[dict] = field(default_factory=list)
    journal_fingerprint: str | None = None
    started: float = field(default_factory=time.time)

    @property
    def manifest_path(self) -> Path:
        return file_manifest_path(self.out)

    def appender(self):
        """An `io.Appender` on the journal (writing the header line first if the journal is new)."""
        from alignctl.io import Appender

        fresh = not self.journal.exists() or self.journal.stat().st_size == 0
        app = Appender(self.journal)
        if fresh:
            key = self.journal_fingerprint or self.fingerprint
            app.add({JOURNAL_HEADER: {"stage": self.stage, "fingerprint": key}})
        return app

    def drop_empty_journal(self) -> None:
        """Remove a journal that holds nothing but its header (a run that failed before any work)."""
        from alignctl.io import read_journal

        if self.journal.is_file() and len(read_journal(self.journal)) <= 1:
            self.journal.unlink()

    def finish(self, records: Iterable[dict], final_metrics: dict | None = None, extra: dict | None = None) -> Path:
        """Write `out` (temp + rename) and its manifest, then drop the journal."""
        from alignctl.io import atomic_path, dumps

        n = 0
        with atomic_path(self.out) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in records:
                    fh.write(dumps(rec) + "\n")
                    n += 1
            manifest = {
                "stage": self.stage,
                "alignctl_version": __version__,
                "command": sys.argv,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "wall_seconds": round(time.time() - self.started, 2),
                "preset": self.resolved.preset if self.resolved else None,
                "config": self.resolved.manifest() if self.resolved else {},
                "inputs": self.inputs,
                "parent_model": self.parent_model,
                "libraries": library_versions(),
                "output": {"path": str(self.out), "records": n, "sha256": sha256_file(tmp)},
                "final_metrics": final_metrics or {},
                "fingerprint": self.fingerprint,
                **(extra or {}),
            }
            # the manifest lands first: a crash before the rename leaves a manifest whose sha256
            # matches no output, which reads as "not up to date", never as a finished run
            write_json(self.manifest_path, manifest)
        self.journal.unlink(missing_ok=True)
        return self.out


def read_file_manifest(out: Path) -> dict | None:
    try:
        return json.loads(file_manifest_path(out).read_text())
    except (OSError, ValueError):
        return None


def begin_file(
    stage: str,
    out: str | Path,
    *,
    inputs: dict[str, Any],
    resolved: Resolved | None,
    overwrite: bool = False,
    force: bool = False,
    parent_model: str | None = None,
    extra: dict | None = None,
    journal_key: dict | None = None,
) -> FileRun:
    """`begin` for a stage whose output is one file; resumes a matching journal by itself.

    A journal is resumed when its fingerprint matches: by default the whole run's; with
    `journal_key`, a fingerprint of the inputs and `journal_key` only, for stages whose journal
    holds work that some settings do not change (`label` keeps a person's choices when only the
    pair-selection settings change).
    """
    from alignctl.io import read_journal

    out = Path(out)
    journal = out.with_name(out.name + ".partial")
    fp = fingerprint(stage, inputs, resolved, extra)
    jfp = fp if journal_key is None else fingerprint(stage, inputs, None, journal_key)
    run = FileRun(stage, out, journal, fp, inputs, resolved, parent_model, journal_fingerprint=jfp)
    if out.is_dir():
        raise OutputError(f"{out}: is a directory, expected a file name for the {stage} output")
    if out.exists():
        manifest = read_file_manifest(out)
        same = bool(manifest) and manifest.get("fingerprint") == fp
        intact = same and manifest.get("output", {}).get("sha256") == sha256_file(out)
        if intact and not (force or overwrite):
            run.up_to_date = True
            return run
        if not overwrite and not force:
            what = "not an alignctl output" if not manifest else "a different run" if not same else "edited since"
            raise OutputError(f"{out}: already exists ({what}); pass --overwrite to replace it")
    _check_writable(out.parent if str(out.parent) else Path("."))
    if journal.is_dir():
        raise OutputError(f"{journal}: is a directory; remove it first")
    if journal.exists():
        records = read_journal(journal)
        header = records[0].get(JOURNAL_HEADER, {}) if records and isinstance(records[0], dict) else {}
        if header.get("fingerprint") == jfp and not force:
            run.journal_records = records[1:]
            note(f"resuming the unfinished run in {journal}")
        else:
            why = "--force" if header.get("fingerprint") == jfp else "different inputs or settings"
            note(f"removing an unfinished earlier run in {journal} ({why})")
            journal.unlink()
    return run
