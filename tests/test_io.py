"""io.py: the JSONL contracts, line-numbered errors, atomic writes and the crash-safe journal."""

from __future__ import annotations

import json

import pytest

from alignctl import io
from alignctl.errors import InputError
from tiny import write_jsonl

CONV_CHOSEN = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]
CONV_REJECTED = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Rome."}]


@pytest.mark.parametrize(
    "rec, shape",
    [
        ({"chosen": "Q: 2+2? A: 4", "rejected": "Q: 2+2? A: 5"}, "implicit/standard"),
        ({"chosen": CONV_CHOSEN, "rejected": CONV_REJECTED}, "implicit/conversational"),
        ({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, "explicit/standard"),
        (
            {"prompt": CONV_CHOSEN[:1], "chosen": CONV_CHOSEN[1:], "rejected": CONV_REJECTED[1:]},
            "explicit/conversational",
        ),
    ],
)
def test_preference_shapes_load(tmp_path, rec, shape):
    path = write_jsonl(tmp_path / "prefs.jsonl", [rec, rec])
    records = io.load(path, "preferences")
    assert len(records) == 2 and io.preference_shape(records[0]) == shape


def test_to_explicit_splits_shared_prefix():
    rec = io.to_explicit({"chosen": CONV_CHOSEN, "rejected": CONV_REJECTED})
    assert rec["prompt"] == CONV_CHOSEN[:1] and rec["chosen"] == CONV_CHOSEN[1:]
    rec = io.to_explicit({"chosen": "Q: capital? A: Paris", "rejected": "Q: capital? A: Rome"})
    assert rec["prompt"] == "Q: capital? A: " and rec["chosen"] == "Paris" and rec["rejected"] == "Rome"


def test_errors_name_the_line(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "rejected": "c"}\n{bad json\n')
    with pytest.raises(InputError) as err:
        io.load(path, "preferences")
    assert str(err.value).startswith(f'{path}:2: "chosen" is missing')
    assert "1 more problem" in str(err.value)
    result = io.read_jsonl(path, "preferences")
    assert [p.line for p in result.problems] == [2, 3]


def test_prompt_ids_are_stable_and_unique(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": "b", "id": "x"}, {"prompt": "a"}])
    result = io.read_jsonl(path, "prompts")
    assert result.records[0]["id"] == io.prompt_id("a") and result.records[1]["id"] == "x"
    assert "duplicate prompt id" in result.problems[0].message and result.problems[0].line == 3


def test_bom_and_crlf_accepted_with_warnings(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "a"}\r\n{"prompt": "b"}\r\n')
    result = io.read_jsonl(path, "prompts")
    assert not result.problems and len(result.records) == 2 and len(result.warnings) == 2


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "out.jsonl"

    def records():
        yield {"a": 1}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        io.write_jsonl(out, records())
    assert list(tmp_path.iterdir()) == []
    assert io.write_jsonl(out, [{"a": 1}, {"b": 2}]) == 2
    assert [json.loads(x) for x in out.read_text().splitlines()] == [{"a": 1}, {"b": 2}]


def test_journal_drops_torn_last_line(tmp_path):
    path = tmp_path / "j.jsonl"
    with io.Appender(path) as j:
        j.add({"id": "1"})
        j.add({"id": "2"})
    with open(path, "a") as fh:
        fh.write('{"id": "3", "compl')  # a crash mid-line
    assert [r["id"] for r in io.read_journal(path)] == ["1", "2"]
    with io.Appender(path) as j:  # appends start on a clean line after the torn tail is cut
        j.add({"id": "3"})
    assert [r["id"] for r in io.read_journal(path)] == ["1", "2", "3"]


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    """SIGKILL inside atomic_path leaves `.out.jsonl.<pid>.<random>.tmp`; nothing can clean it up at
    the time, so the next write of the same file does: a temp whose writer is gone, or one from an
    alignctl that wrote no pid. A live writer's temp and other files' temps stay."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out.jsonl"
    killer = (
        "import os, signal, sys\nfrom alignctl import io\n"
        "def records():\n    yield {'a': 1}\n    os.kill(os.getpid(), signal.SIGKILL)\n"
        "io.write_jsonl(sys.argv[1], records())\n"
    )
    proc = subprocess.run([sys.executable, "-c", killer, str(out)], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".out.jsonl.") and left.name.endswith(".tmp")  # what the kill left

    legacy = tmp_path / ".out.jsonl.k2x_9abc.tmp"  # the name before temps carried the writer's pid
    live = tmp_path / f".out.jsonl.{os.getppid()}.abcd1234.tmp"  # pytest's parent: a process that is alive
    other = tmp_path / ".out.jsonl.alignctl.json.1.abcd1234.tmp"  # the manifest's temp, not this file's
    for p in (legacy, live, other):
        p.write_text("x")
    io.write_jsonl(out, [{"b": 2}])
    assert out.read_text() == '{"b": 2}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, live.name, other.name])
