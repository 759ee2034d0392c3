"""`alignctl sft` on a tiny local model: it learns the answers, on them only; conversations and a
preference file's chosen answers (--from-prefs) feed it; bad input is one line."""

from __future__ import annotations

import json

import pytest

from alignctl import stages
from tiny import toy_preferences, write_jsonl

pytestmark = pytest.mark.usefixtures("torch_one_thread")

LEARN = ["warmup_steps=0", "optim=adamw_torch", "logging_steps=1", "learning_rate=5e-3"]
USER = [{"role": "user", "content": "Is the sky blue?"}]


def toy_completions(n: int) -> list[dict]:
    """The chosen side of the toy preference set: every question answered ' yes good'."""
    return [{"prompt": p["prompt"], "completion": p["chosen"]} for p in toy_preferences(n)]


def _rows(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_sft_learns_the_answers(tmp_path, tiny_lm, lr="2e-2"):
    """20 steps (full fine-tuning) on questions all answered ' yes good': the loss on the answers falls to under a third
    of step 1's and the token accuracy rises; the weights changed. At learning rate 0 neither moves
    (tried: `lr="0"` fails the loss assertion)."""
    import torch
    from safetensors.torch import load_file

    from alignctl.stages import sft

    data = write_jsonl(tmp_path / "sft.jsonl", toy_completions(32))
    sets = [*LEARN[:-1], f"learning_rate={lr}", "max_steps=20", "per_device_train_batch_size=4", "use_peft=false"]
    out = sft.run(stages.resolve("sft", sets=sets), data, str(tiny_lm), tmp_path / "out")
    rows = [r for r in _rows(out) if "loss" in r]
    first, last = rows[0], rows[-1]
    assert last["loss"] < first["loss"] / 3, (first, last)
    assert last["mean_token_accuracy"] > first["mean_token_accuracy"] + 0.2, (first, last)
    before, after = load_file(tiny_lm / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    manifest = json.loads((out / "alignctl.json").read_text())
    assert manifest["stage"] == "sft" and manifest["records"] == {"train": 32, "eval": 0}


@pytest.mark.parametrize("only_answers", [True, False])
def test_the_loss_covers_the_answers_only_unless_switched_off(tmp_path, tiny_lm, only_answers):
    """The resolved setting reaches TRL's collator: with completion_only_loss (the default) every
    prompt token is masked out of the labels (-100), without it none is."""
    from types import SimpleNamespace

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from alignctl import config, models, training

    resolved = stages.resolve("sft", sets=[] if only_answers else ["completion_only_loss=false"])
    config.adjust_for_device(resolved, cuda=False)
    args = SFTConfig(**training.trl_kwargs(SFTConfig, resolved, SimpleNamespace(work=tmp_path / "out")))
    tokenizer = models.load_tokenizer(str(tiny_lm))
    trainer = SFTTrainer(
        model=models.load_causal_lm(str(tiny_lm)),
        args=args,
        train_dataset=Dataset.from_list(toy_completions(2)),
        processing_class=tokenizer,
    )
    batch = trainer.data_collator([trainer.train_dataset[0]])
    prompt_len = len(tokenizer(toy_completions(1)[0]["prompt"])["input_ids"])
    masked = (batch["labels"][0] == -100).sum().item()
    assert masked == (prompt_len if only_answers else 0), (masked, prompt_len)


def test_conversations_train_on_their_last_answer(tmp_path):
    from alignctl.training.data import read_completions

    chat = USER + [{"role": "assistant", "content": "yes"}, {"role": "user", "content": "Sure?"}]
    rows = [{"messages": [*chat, {"role": "assistant", "content": "quite"}]}, {"prompt": USER, "completion": chat[1:2]}]
    path = write_jsonl(tmp_path / "chats.jsonl", rows)
    assert read_completions(path) == [
        {"prompt": chat, "completion": [{"role": "assistant", "content": "quite"}]},
        {"prompt": USER, "completion": chat[1:2]},
    ]


def test_from_prefs_fine_tunes_on_the_chosen_answers(tmp_path, tiny_lm, run):
    """Rejection-sampling fine-tuning: a preference file's chosen answers, each with its prompt."""
    from alignctl.training.data import read_completions

    pairs = [
        {"prompt": "Is the sky blue?", "chosen": " yes", "rejected": " no"},
        {"chosen": "Is paris big? yes good", "rejected": "Is paris big? no bad"},
    ]
    prefs = write_jsonl(tmp_path / "prefs.jsonl", pairs)
    assert read_completions(prefs, from_prefs=True) == [
        {"prompt": "Is the sky blue?", "completion": " yes"},
        {"prompt": "Is paris big? ", "completion": "yes good"},
    ]
    write_jsonl(tmp_path / "many.jsonl", toy_preferences(8))
    proc = run("sft", "-d", "many.jsonl", "--from-prefs", "-m", tiny_lm, "--max-steps", "1", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((tmp_path / "out" / "alignctl.json").read_text())
    assert manifest["records"] == {"train": 8, "eval": 0, "chosen_answers": 8}


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"prompt": "q", "chosen": "a", "rejected": "b"}], "s.jsonl: holds preference pairs; --from-prefs fine-tunes"),
        ([{"prompt": "q", "completion": "a"}, {"prompt": "q2"}], 's.jsonl:2: "completion" is missing'),
        ([{"prompt": "q", "completion": ""}], 's.jsonl:1: "completion" is an empty string'),
        ([{"messages": USER}], 's.jsonl:1: "messages" must end with an assistant turn'),
        ([{"messages": [{"role": "assistant", "content": "hi"}]}], '"messages" holds no turn before the answer'),
        ([{"prompt": USER, "completion": "a"}], '"prompt" and "completion" must both be strings or both be'),
        ([{"prompt": "a"}], "holds prompts records, expected completions or preferences"),
    ],
)
def test_bad_sft_input_is_one_line_and_writes_nothing(tmp_path, cli, records, message):
    from refusals import fails_writing_nothing

    write_jsonl(tmp_path / "s.jsonl", records)
    err = fails_writing_nothing(cli, tmp_path, "sft", "-d", "s.jsonl", "-m", tmp_path / "no-model", "-o", "out")
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_from_prefs_needs_a_preference_file(tmp_path, cli):
    from refusals import fails_writing_nothing

    write_jsonl(tmp_path / "s.jsonl", toy_completions(2))
    err = fails_writing_nothing(cli, tmp_path, "sft", "-d", "s.jsonl", "--from-prefs", "-m", tmp_path / "x", "-o", "o")
    assert "s.jsonl: holds completions records, expected preferences" in err, err


@pytest.mark.slow
def test_smollm2_sft_learns_the_qa_answers(tmp_path, run):
    """The embedded SmolLM2 with LoRA, the chapter's preset at a CPU learning rate: 12 steps on the
    example QA pairs' chosen answers; the loss on the answers falls."""
    from conftest import REPO

    proc = run(
        "sft", "--data", REPO / "examples" / "prefs.jsonl", "--from-prefs", "--model", "smollm2-135m",
        "--max-steps", "12", "--batch-size", "4", "--learning-rate", "2e-4", "--set", "max_length=256",
        "--set", "logging_steps=1", "-o", "sft", cwd=tmp_path, timeout=900, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [r for r in _rows(tmp_path / "sft") if "loss" in r]
    assert rows[-1]["step"] == 12 and min(r["loss"] for r in rows[-3:]) < rows[0]["loss"], rows
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "sft")


def test_validate_reads_sft_records(tmp_path, cli):
    rows = [{"messages": [*USER, {"role": "assistant", "content": "yes it is"}]}, {"prompt": "q", "completion": "a b"}]
    code, out, err = cli("validate", write_jsonl(tmp_path / "s.jsonl", rows))
    assert code == 0 and "completions, 2 records, 0 problems" in out + err, out + err
