"""readers.py: data as users keep it (Parquet, JSON arrays, saved datasets, folders of data files,
hub ids with --split), the shapes of the published preference sets, and what stages make of them.

Every file is written here, none downloaded. The shapes: HH-RLHF (implicit strings holding the
whole dialogue), trl-lib's ultrafeedback (implicit conversations), HuggingFaceH4/ultrafeedback_binarized
and allenai's Tulu 3 mixture (a prompt string and whole conversations repeating it, sometimes
after a system turn), and a Chinese file in the chapter's style.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignctl import io, readers, stages
from alignctl.errors import InputError
from tiny import write_jsonl

SYSTEM = {"role": "system", "content": "Answer briefly."}


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def tulu(q: str, good: str, bad: str, system: bool = False) -> dict:
    head = [SYSTEM] if system else []
    return {"prompt": q, "chosen": [*head, user(q), bot(good)], "rejected": [*head, user(q), bot(bad)]}


TULU = [
    tulu("What is the capital of Italy?", "The capital of Italy is Rome.", "Italy's capital is Milan, I believe."),
    tulu("What is the capital of France?", "Paris is the capital.", "It is Berlin.", system=True),
    tulu("Is the sky blue?", "Yes, on a clear day.", "No, the sky is green."),
]
HH = [
    {"chosen": f"\n\nHuman: {q}\n\nAssistant: {good}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {bad}"}
    for q, good, bad in (("Is the sky blue?", "yes good", "no bad"), ("Is paris big?", "yes good", "no"))
]
TRL_LIB = [
    {"chosen": [user(q), bot(good)], "rejected": [user(q), bot(bad)]}
    for q, good, bad in (("Capital of Spain?", "Madrid.", "Rome."), ("Capital of Japan?", "Tokyo.", "Paris."))
]
# the chapter's own topics, in its language: each chosen answer is the longer, better one
ZH = [
    tulu(
        "什么是奖励模型？",
        "奖励模型根据人类的偏好给回答打分，PPO用这个分数来更新策略模型。",
        "一个普通的语言模型。",
    ),
    tulu(
        "DPO和PPO有什么区别？", "DPO直接在偏好数据上优化策略，不需要单独训练奖励模型，也不需要在线采样。", "没有区别。"
    ),
    tulu("为什么要加KL惩罚？", "KL惩罚让策略不要离参考模型太远，防止模型钻奖励模型的空子。", "为了训练更快。"),
    tulu("β应该取多大？", "常用0.1；β越大，训练后的策略越接近参考模型。", "越大越好。", system=True),
    tulu("中国的首都是哪里？", "中国的首都是北京，也是全国的政治中心。", "上海。"),
]
SHAPES = {"tulu": TULU, "hh-rlhf": HH, "trl-lib": TRL_LIB, "chinese": ZH}


def write_as(fmt: str, path: Path, records: list[dict]) -> Path:
    """`records` as a file or dir of format `fmt` (jsonl, parquet, json, saved, saved-dict, folder)."""
    if fmt == "jsonl":
        return write_jsonl(path.with_suffix(".jsonl"), records)
    if fmt == "json":
        out = path.with_suffix(".json")
        out.write_text(json.dumps(records, ensure_ascii=False, indent=1))
        return out
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fmt == "parquet":
        out = path.with_suffix(".parquet")
        pq.write_table(pa.Table.from_pylist(records), out)
        return out
    if fmt == "folder":  # a cloned hub repo: data files under data/
        (path / "data").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(records), path / "data" / "train-00000-of-00001.parquet")
        return path
    import datasets

    ds = datasets.Dataset.from_list(records)
    (datasets.DatasetDict({"train": ds, "test": ds.select([0])}) if fmt == "saved-dict" else ds).save_to_disk(path)
    return path


FORMATS = [
    ("jsonl", None),
    ("parquet", None),
    ("json", None),
    ("saved", None),
    ("saved-dict", "train"),
    ("folder", "train"),
]


@pytest.mark.parametrize("fmt, split", FORMATS, ids=[f for f, _ in FORMATS])
def test_every_format_gives_the_same_records(tmp_path, fmt, split):
    expected = io.load(write_as("jsonl", tmp_path / "ref", TULU), "preferences")
    source = write_as(fmt, tmp_path / "data", TULU)
    result = io.read(source, "preferences", split=split)
    assert not result.problems and result.normalised == 3
    assert result.records == expected
    assert expected[1]["prompt"] == [SYSTEM, user("What is the capital of France?")]


def test_prompts_from_a_table_keep_ids_and_extra_columns(tmp_path):
    rows = [{"id": 7, "prompt": "Is the sky blue?", "answer": "yes"}, {"id": 8, "prompt": "Hi", "answer": None}]
    records = io.load(write_as("parquet", tmp_path / "p", rows), "prompts")
    assert records == [{"id": "7", "prompt": "Is the sky blue?", "answer": "yes"}, {"id": "8", "prompt": "Hi"}]


def test_table_cells_become_json(tmp_path):
    """NaN (pandas' missing number) is an absent field, a date is ISO text, a binary cell a problem."""
    import datetime

    rows = [
        {"prompt": "a", "score": float("nan"), "day": datetime.date(2024, 5, 1), "image": None},
        {"prompt": "b", "score": 1.0, "day": datetime.date(2024, 5, 2), "image": b"\x89PNG"},
    ]
    result = io.read(write_as("parquet", tmp_path / "p", rows), "prompts")
    assert [r["prompt"] for r in result.records] == ["a"] and "score" not in result.records[0]
    assert result.records[0]["day"] == "2024-05-01"
    assert [p.render("p") for p in result.problems] == ["p: row 2: column image holds binary data, not text"]


@pytest.mark.parametrize("fmt", ["parquet", "json", "saved"])
def test_problems_in_tables_name_the_row(tmp_path, fmt):
    rows = [TULU[0], {**TULU[2], "prompt": "Is grass green?"}, TULU[1]]
    source = write_as(fmt, tmp_path / "data", rows)
    with pytest.raises(InputError) as err:
        io.load(source, "preferences")
    assert str(err.value).startswith(f"{source}: row 2: ") and "does not start with the prompt" in str(err.value)


def test_fingerprints_follow_the_content(tmp_path):
    saved = write_as("saved", tmp_path / "ds", TULU)
    first = readers.fingerprint(saved)
    assert first == readers.fingerprint(saved) and first["sha256"]
    write_as("saved", tmp_path / "ds2", TULU[:2])
    assert readers.fingerprint(tmp_path / "ds2")["sha256"] != first["sha256"]
    f = write_as("parquet", tmp_path / "p", TULU)
    assert readers.fingerprint(f) == {"path": str(f), "sha256": io.sha256_file(f)}
    assert readers.fingerprint("org/prefs", "train") == {"ref": "org/prefs", "split": "train"}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_validate_reads_each_published_shape(tmp_path, cli, shape):
    path = write_jsonl(tmp_path / f"{shape}.jsonl", SHAPES[shape])
    code, out, err = cli("validate", path, "--json")
    assert code == 0, err
    stats = json.loads(out)["files"][0]["stats"]
    assert stats["records"] == len(SHAPES[shape])
    assert stats["normalised"] == (len(SHAPES[shape]) if shape in ("tulu", "chinese") else 0)


def test_validate_says_how_many_records_were_normalised(tmp_path, cli):
    source = write_as("parquet", tmp_path / "tulu", TULU)
    code, out, err = cli("validate", source)
    assert code == 0, err
    assert "normalised       3 (whole conversations" in out


def test_tulu_record_trains_without_its_prompt_in_the_answer(tmp_path, tiny_lm, monkeypatch):
    """The tokenized inputs DPOTrainer sees: the question sits in the prompt ids, never in the answers."""
    from alignctl import training
    from alignctl.stages import dpo

    seen = {}

    def stop_before_training(trainer, tokenizer, run_, **_):
        seen["trainer"], seen["tokenizer"] = trainer, tokenizer
        return run_.out

    monkeypatch.setattr(training, "finish", stop_before_training)
    data = write_as("parquet", tmp_path / "tulu", TULU)
    dpo.run(stages.resolve("dpo", sets=["eval_split=0"]), data, str(tiny_lm), tmp_path / "out")
    rows = list(seen["trainer"].train_dataset)
    decode = seen["tokenizer"].decode
    assert len(rows) == 3
    for rec, row in zip(TULU, rows, strict=True):
        prompt, chosen, rejected = decode(row["prompt_ids"]), decode(row["chosen_ids"]), decode(row["rejected_ids"])
        assert prompt.count(rec["prompt"]) == 1 and prompt.count("<|im_start|>user") == 1
        assert rec["prompt"] not in chosen and rec["prompt"] not in rejected
        assert "<|im_start|>user" not in chosen and "<|im_start|>user" not in rejected
        assert rec["chosen"][-1]["content"] in chosen and rec["rejected"][-1]["content"] in rejected
    assert "Answer briefly." in decode(rows[1]["prompt_ids"])  # the system turn is part of the prompt


TRAIN_FORMATS = [("parquet", None), ("json", None), ("saved", None)]


@pytest.mark.parametrize("fmt, split", TRAIN_FORMATS, ids=[f for f, _ in TRAIN_FORMATS])
def test_formats_train_dpo_and_feed_collect(tmp_path, tiny_lm, cli, fmt, split):
    import torch
    from safetensors.torch import load_file

    data = write_as(fmt, tmp_path / "prefs", TULU)
    out = tmp_path / "dpo"
    args = ["dpo", "--data", data, "-m", tiny_lm, "--max-steps", "2", "--lr", "1e-2", "-o", out]
    code, stdout, err = cli(*args, *(["--split", split] if split else []))
    assert code == 0, err
    before, after = load_file(tiny_lm / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    manifest = json.loads((out / "alignctl.json").read_text())
    assert manifest["inputs"]["data"] == readers.fingerprint(data)

    prompts = write_as(fmt, tmp_path / "prompts", [{"prompt": r["prompt"], "topic": "capitals"} for r in TULU])
    cands = tmp_path / "cands.jsonl"
    code, _, err = cli("collect", "-p", prompts, "-m", out, "-n", "2", "--max-new-tokens", "4", "-o", cands)
    assert code == 0, err
    recs = io.load(cands, "candidates")
    assert [r["prompt"] for r in recs] == [r["prompt"] for r in TULU] and recs[0]["topic"] == "capitals"
    assert all(len(r["completions"]) == 2 for r in recs)


def test_split_of_a_saved_dataset_dict_and_of_a_folder(tmp_path, tiny_lm, cli):
    saved = write_as("saved-dict", tmp_path / "dd", ZH)
    code, out, err = cli("validate", saved, "--split", "test", "--json")
    assert code == 0 and json.loads(out)["files"][0]["stats"]["records"] == 1, err
    code, out, _ = cli("validate", saved, "--json")
    assert code == 2 and json.loads(out)["files"][0]["problems"] == [
        f"{saved}: holds the splits train, test; choose one with --split"
    ]
    folder = write_as("folder", tmp_path / "repo", ZH)
    code, out, err = cli("validate", folder, "--split", "train", "--json")
    assert code == 0 and json.loads(out)["files"][0]["stats"]["normalised"] == len(ZH), err


@pytest.mark.parametrize(
    "stage, shape, fmt",
    [
        ("train-rm", "tulu", "json"),
        ("train-rm", "hh-rlhf", "jsonl"),
        ("kto", "chinese", "saved"),
        ("kto", "trl-lib", "parquet"),
        ("dpo", "chinese", "jsonl"),
    ],  # fmt: skip
)
def test_stages_train_on_the_published_shapes(tmp_path, tiny_lm, cli, stage, shape, fmt):
    data = write_as(fmt, tmp_path / shape, SHAPES[shape])
    out = tmp_path / "out"
    code, _, err = cli(stage, "--data", data, "-m", tiny_lm, "--max-steps", "1", "--set", "eval_split=0", "-o", out)
    assert code == 0, err
    records = json.loads((out / "alignctl.json").read_text())["final_metrics"]
    assert records["global_step"] == 1


# ---------------------------------------------------------------------------------------------
# Chinese lengths, label / eval / iterate with --split

ZH_CANDS = [
    {
        "id": "z1",
        "prompt": "中国的首都是哪里？",
        "completions": ["北京。", "中国的首都是北京，它是一座历史悠久的城市，也是全国的政治和文化中心。", "上海。"],
        "answer": "北京",
    },
    {
        "id": "z2",
        "prompt": "DPO需要奖励模型吗？",
        "completions": ["不需要。", "不需要：DPO直接在偏好对上优化策略，奖励隐含在策略和参考模型的对数概率之比里。"],
        "answer": "不需要",
    },
    {
        "id": "z3",
        "prompt": "PPO里的KL惩罚有什么用？",
        "completions": ["没用。", "KL惩罚让策略不要离参考模型太远，防止模型钻奖励模型的空子，也就是奖励欺骗。"],
        "answer": "参考模型",
    },
]


def test_validate_measures_chinese_in_characters(tmp_path, cli):
    """Each chosen answer is two to ten times longer; whitespace splitting saw 1 word each ("1.00x")."""
    code, out, err = cli("validate", write_jsonl(tmp_path / "zh.jsonl", ZH), "--json")
    assert code == 0, err
    report = json.loads(out)["files"][0]
    ratio = report["stats"]["length_ratio"]
    assert ratio["mean_ratio"] > 3 and ratio["chosen_longer"] == 1.0
    assert report["stats"]["lengths"]["chosen"]["max"] == 32  # "DPO" + 31 characters, not 1 "word"
    assert any("chosen is longer than rejected in 100% of pairs" in w for w in report["warnings"])


def test_label_reads_a_split_and_counts_chinese_characters(tmp_path, cli):
    cands = write_as("saved-dict", tmp_path / "cands", ZH_CANDS)
    out = tmp_path / "prefs.jsonl"
    code, _, err = cli("label", "-c", cands, "--split", "train", "--by", "rule:qa", "-o", out)
    assert code == 0, err
    rows = io.load(out, "preferences")
    assert [(r["chosen"], r["rejected"]) for r in rows[:1]] == [("北京。", "上海。")]  # correct and brief wins
    manifest = json.loads((tmp_path / "prefs.jsonl.alignctl.json").read_text())
    assert manifest["inputs"]["candidates"] == readers.fingerprint(cands, "train")

    rule = tmp_path / "longer.py"
    rule.write_text("def longer(prompts, completions, **columns):\n    return [float(len(c)) for c in completions]\n")
    code, _, err = cli("label", "-c", cands, "--split", "train", "--by", f"rule:{rule}:longer", "-o", tmp_path / "l")
    assert code == 0, err
    stats = json.loads((tmp_path / "l.alignctl.json").read_text())["final_metrics"]
    assert stats["mean_chosen_words"] > 5 * stats["mean_rejected_words"]  # characters, not 1 "word" each
    assert "the source may reward length" in err


def test_eval_mean_length_counts_chinese_characters():
    from alignctl.comparison import word_count

    assert word_count("中国的首都是北京。") == 8
    assert word_count([{"role": "assistant", "content": "KL惩罚防止奖励欺骗。"}]) == 1 + 8


def test_iterate_reads_a_split_and_hands_its_stages_a_plain_file(tmp_path, tiny_lm):
    from alignctl.stages import iterate

    prompts = write_as("saved-dict", tmp_path / "prompts", [{"prompt": r["prompt"]} for r in ZH_CANDS * 1])
    held = write_jsonl(tmp_path / "held.jsonl", [{"prompt": "β应该取多大？"}])
    p = iterate.plan(stages.resolve("iterate"), prompts, str(tiny_lm), "rule:length", tmp_path / "it", held, "train")
    assert p.train_prompts == tmp_path / "it" / "prompts.train.jsonl"
    assert [r["prompt"] for r in io.load(p.train_prompts, "prompts")] == [r["prompt"] for r in ZH_CANDS]
