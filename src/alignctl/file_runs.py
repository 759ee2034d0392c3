"""File outputs (JSONL written by collect / label, eval's summary): a journal while running, a manifest beside.

The file counterpart of `runs.begin` / `runs.Run`: the same fingerprint and manifest
(`runs.write_manifest`, at `prefs.jsonl.alignctl.json`), but the output is written to a temporary
name and renamed, and the work in progress is an append-only journal (`<out>.partial`) that a
rerun with the same inputs and settings continues from.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignctl import runs
from alignctl.config import Resolved
from alignctl.console import note
from alignctl.errors import OutputError
from alignctl.io import sha256_file

JOURNAL_HEADER = "_alignctl_journal"


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
        return runs.manifest_path(self.out, file_output=True)

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
        """Write `out` as JSONL (temp + rename) and its manifest, then drop the journal."""
        from alignctl.io import dumps

        def write(fh) -> int:
            n = 0
            for rec in records:
                fh.write(dumps(rec) + "\n")
                n += 1
            return n

        return self._commit(write, final_metrics, extra)

    def finish_json(self, data: Any, final_metrics: dict | None = None, extra: dict | None = None) -> Path:
        """Write `out` as one JSON document (eval's summary) and its manifest, as `finish` does."""

        def write(fh) -> int:
            fh.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
            return 1

        return self._commit(write, final_metrics, extra)

    def _commit(self, write, final_metrics: dict | None, extra: dict | None) -> Path:
        from alignctl.io import atomic_path

        with atomic_path(self.out) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                n = write(fh)
            output = {"path": str(self.out), "records": n, "sha256": sha256_file(tmp)}
            # the manifest lands first: a crash before the rename leaves a manifest whose sha256
            # matches no output, which reads as "not up to date", never as a finished run
            runs.write_manifest(
                self.manifest_path, **runs.identity(self), final_metrics=final_metrics, output=output, extra=extra
            )
        runs.crash_point("file-journal")
        self.journal.unlink(missing_ok=True)
        return self.out


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
    fp = runs.fingerprint(stage, inputs, resolved, extra)
    jfp = fp if journal_key is None else runs.fingerprint(stage, inputs, None, journal_key)
    run = FileRun(stage, out, journal, fp, inputs, resolved, parent_model, journal_fingerprint=jfp)
    if out.is_dir():
        raise OutputError(f"{out}: is a directory, expected a file name for the {stage} output")
    if out.exists():
        manifest = runs.read_manifest(out, file_output=True)
        same = bool(manifest) and manifest.get("fingerprint") == fp
        intact = same and manifest.get("output", {}).get("sha256") == sha256_file(out)
        if intact and not (force or overwrite):
            run.up_to_date = True
            if journal.is_file():  # killed after the output and its manifest, before the journal went
                journal.unlink()
            return run
        if not overwrite and not force:
            what = "not an alignctl output" if not manifest else "a different run" if not same else "edited since"
            raise OutputError(f"{out}: already exists ({what}); pass --overwrite to replace it")
    runs.check_writable(out.parent if str(out.parent) else Path("."))
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
