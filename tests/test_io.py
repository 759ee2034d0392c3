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


# ---------------------------------------------------------------------------------------------
# Whole conversations (HuggingFaceH4/ultrafeedback_binarized, allenai's Tulu 3 preference mixture)

Q = "What is the capital of Italy?"
SYSTEM = {"role": "system", "content": "Answer in one sentence."}


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


TULU = {
    "prompt": Q,
    "chosen": [user(Q), bot("The capital of Italy is Rome.")],
    "rejected": [user(Q), bot("Italy's capital is Milan, I believe.")],
}


@pytest.mark.parametrize(
    "rec, prompt",
    [
        (TULU, [user(Q)]),
        ({**TULU, "chosen": [SYSTEM, *TULU["chosen"]], "rejected": [SYSTEM, *TULU["rejected"]]}, [SYSTEM, user(Q)]),
        ({**TULU, "prompt": [user(Q)]}, [user(Q)]),  # the prompt already as messages
        (
            {
                **TULU,
                "prompt": [SYSTEM, user(Q)],
                "chosen": [SYSTEM, *TULU["chosen"]],
                "rejected": [SYSTEM, *TULU["rejected"]],
            },
            [SYSTEM, user(Q)],
        ),  # fmt: skip
    ],
    ids=["string-prompt", "system-turn", "message-prompt", "message-prompt-with-system"],
)
def test_whole_conversations_are_split_into_prompt_and_answers(tmp_path, rec, prompt):
    path = write_jsonl(tmp_path / "prefs.jsonl", [rec])
    result = io.read(path, "preferences")
    assert not result.problems and result.normalised == 1
    [got] = result.records
    assert got["prompt"] == prompt
    assert got["chosen"] == [bot("The capital of Italy is Rome.")]
    assert got["rejected"] == [bot("Italy's capital is Milan, I believe.")]
    assert io.load(path, "preferences") == [got]


def test_unpaired_whole_conversation_is_split_too(tmp_path):
    rec = {"prompt": Q, "completion": [user(Q), bot("Rome.")], "label": True}
    result = io.read(write_jsonl(tmp_path / "u.jsonl", [rec]), "unpaired")
    assert result.records == [{"prompt": [user(Q)], "completion": [bot("Rome.")], "label": True}]


@pytest.mark.parametrize(
    "rec, message",
    [
        ({**TULU, "prompt": "What is the capital of France?"}, "does not start with the prompt's turn(s)"),
        (
            {**TULU, "rejected": [user("Capital of Italy??"), bot("Milan.")]},
            '"chosen" and "rejected" disagree on the prompt turns',
        ),  # fmt: skip
        ({**TULU, "rejected": [SYSTEM, *TULU["rejected"]]}, "disagree on the prompt turns"),
        ({**TULU, "chosen": [user(Q)]}, '"chosen" must be a non-empty list of messages'),  # nothing after the prompt
    ],
    ids=["other-prompt", "rejected-differs", "system-on-one-side", "no-answer"],
)
def test_ambiguous_conversations_stay_errors_with_the_line(tmp_path, rec, message):
    path = write_jsonl(tmp_path / "prefs.jsonl", [TULU, rec])
    with pytest.raises(InputError) as err:
        io.load(path, "preferences")
    assert str(err.value).startswith(f"{path}:2: ") and message in str(err.value)


# ---------------------------------------------------------------------------------------------
# Chinese and ids

ZH_PAIRS = [  # implicit pairs without a space anywhere, as a Chinese data set writes them
    ("用户：什么是奖励模型？助手：", "奖励模型根据人类偏好给回答打分，PPO用这个分数更新策略。", "一个普通的语言模型。"),
    ("用户：DPO和PPO有什么区别？助手：", "DPO直接在偏好对上优化策略，不需要单独训练奖励模型。", "没有区别。"),
    ("用户：为什么要加KL惩罚？助手：", "KL惩罚让策略不要离参考模型太远，防止奖励欺骗。", "为了训练更快。"),
]


@pytest.mark.parametrize("prompt, chosen, rejected", ZH_PAIRS, ids=["reward-model", "dpo-vs-ppo", "kl"])
def test_to_explicit_finds_a_chinese_prompt_without_spaces(prompt, chosen, rejected):
    rec = io.to_explicit({"chosen": prompt + chosen, "rejected": prompt + rejected})
    assert (rec["prompt"], rec["chosen"], rec["rejected"]) == (prompt, chosen, rejected)


def test_to_explicit_keeps_a_shared_chinese_word_in_the_answers():
    rec = io.to_explicit({"chosen": "问：首都在哪？答：北京是首都。", "rejected": "问：首都在哪？答：北京不是首都。"})
    assert rec["prompt"] == "问：首都在哪？答：" and rec["chosen"] == "北京是首都。"


def test_text_length_counts_cjk_characters():
    assert io.text_length("the capital is Rome") == 4
    assert io.text_length("北京是首都。") == 5  # five characters, the full stop is no word
    assert io.text_length("PPO用这个分数更新策略") == 1 + 9
    assert io.text_length([user("你好"), bot("hello there")]) == 4


@pytest.mark.parametrize(
    "rec",
    [
        {"prompt": [user("hi")], "id": ""},
        {"prompt": [user("hi")], "id": {"x": 1}},
        {"prompt": "hi", "id": True},
        {"prompt": [user("hi")], "id": False},
    ],
    ids=["message-prompt-empty-id", "message-prompt-object-id", "id-true", "id-false"],
)
def test_bad_ids_are_refused_whatever_the_prompt(tmp_path, rec):
    with pytest.raises(InputError, match='"id" must be a non-empty string or an integer'):
        io.load(write_jsonl(tmp_path / "p.jsonl", [rec]), "prompts")


def test_read_text_says_what_is_wrong_in_one_line(tmp_path):
    from alignctl.files import read_text

    (tmp_path / "ok.yaml").write_text("a: 1\n", encoding="utf-8")
    assert read_text(tmp_path / "ok.yaml", "config") == "a: 1\n"
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    for path, said in [
        (tmp_path / "absent.yaml", "absent.yaml: file not found (config)"),
        (tmp_path, f"{tmp_path}: is a directory, not a file (config)"),
        (tmp_path / "latin1.txt", "latin1.txt: cannot read config: 'utf-8' codec"),
    ]:
        with pytest.raises(InputError) as exc:
            read_text(path, "config")
        assert said in str(exc.value) and "\n" not in str(exc.value)
