"""`alignctl train-rm` on a tiny local model: every preference shape, held-out accuracy, a loadable RM dir."""

from __future__ import annotations

import json

import pytest

from alignctl import stages
from tiny import toy_preferences, write_jsonl

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine torch's OpenMP
    threads spin at barriers (a step ran 5x slower with 2 threads than with 1): use one, then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CONV = [{"role": "user", "content": "Is the sky blue?"}]
SHAPES = {
    "implicit-standard": [
        {"chosen": f"Is {s} big? yes good", "rejected": f"Is {s} big? no bad"} for s in ("paris", "rome", "tokyo")
    ],
    "implicit-conversational": [
        {
            "chosen": CONV + [{"role": "assistant", "content": f"yes good {i}"}],
            "rejected": CONV + [{"role": "assistant", "content": f"no bad {i}"}],
        }
        for i in range(3)
    ],
}


def _changed(before_dir, after_dir) -> list[str]:
    import torch
    from safetensors.torch import load_file

    before, after = load_file(before_dir / "model.safetensors"), load_file(after_dir / "model.safetensors")
    return [k for k in after if k not in before or not torch.equal(before[k], after[k])]


def test_cli_run_writes_a_loadable_reward_model(tmp_path, tiny_lm, run):
    """`alignctl train-rm --data prefs.jsonl -o rm` with explicit-prompt pairs and a held-out fraction."""
    prefs = [
        {"prompt": f"Is the sky {c}?", "chosen": " yes", "rejected": " no"} for c in ("red", "blue", "green", "big")
    ]
    write_jsonl(tmp_path / "prefs.jsonl", prefs)
    proc = run(
        "train-rm", "--data", "prefs.jsonl", "--model", tiny_lm, "--max-steps", "2", "--eval-split", "0.25",
        "-o", "rm", cwd=tmp_path, env=ONE_THREAD,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "rm"
    assert proc.stdout.strip() == "rm"
    assert "gradient_checkpointing off" in proc.stderr  # the chapter's setting, changed on CPU with one line
    manifest = json.loads((out / "alignctl.json").read_text())
    assert manifest["stage"] == "train-rm"
    assert manifest["config"]["lora_r"] == {"value": 32, "source": "preset train-rm: 训练奖励模型: --lora_r 32"}
    assert manifest["records"] == {"train": 3, "eval": 1}
    assert manifest["final_metrics"]["eval_pairs"] == 1 and "eval_accuracy" in manifest["final_metrics"]
    assert (out / "metrics.jsonl").read_text().strip()

    from alignctl import models

    rm = models.load_reward_model(str(out))
    tok = models.load_tokenizer(str(out))
    assert rm.config.num_labels == 1 and tok.pad_token is not None and rm.config.pad_token_id == tok.pad_token_id
    changed = _changed(tiny_lm, out)
    assert "score.weight" in changed  # the new head was trained and saved (modules_to_save), not left random
    assert any("q_proj" in k for k in changed)  # LoRA merged into the base weights


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_implicit_shapes_train(tmp_path, tiny_lm, shape):
    from alignctl.stages import train_rm

    data = write_jsonl(tmp_path / "prefs.jsonl", SHAPES[shape])
    out = train_rm.run(stages.resolve("train-rm", sets=["max_steps=1"]), data, str(tiny_lm), tmp_path / "rm")
    assert json.loads((out / "alignctl.json").read_text())["final_metrics"]["global_step"] == 1


def hot_cold_preferences(subjects) -> list[dict]:
    """Pairs whose right answer depends on the prompt: " yes" to "hot?", " no" to "cold?".

    Each answer is chosen in half the pairs and rejected in the other half, so a model that has not
    learned the rule (a random score head ranks " yes" above " no", or below, whatever the prompt)
    gets about half of them right: accuracy above that is learning, not the head's seed.
    """
    return [
        {"prompt": f"Is {s} {word}?", "chosen": good, "rejected": bad}
        for s in subjects
        for word, good, bad in (("hot", " yes", " no"), ("cold", " no", " yes"))
    ]


def test_training_raises_held_out_accuracy_above_the_untrained_model(tmp_path, tiny_lm):
    """32 training pairs, 12 held out on unseen subjects: the trained model ranks >= 11 of 12 right,
    the same model at a learning rate too small to move it (1e-30: a rate of 0 is no setting; same
    seed, so the same score head) about half."""
    import torch

    from alignctl import models
    from alignctl.stages import train_rm

    train_subjects = ["paris", "rome", "berlin", "madrid", "tokyo", "the sky", "the grass", "the sun"]
    data = write_jsonl(tmp_path / "prefs.jsonl", hot_cold_preferences(train_subjects * 2))
    held = write_jsonl(
        tmp_path / "held.jsonl", hot_cold_preferences(["the moon", "a cat", "a dog", "a fish", "a bird", "the day"])
    )
    finals = {}
    for name, lr, steps in (("untrained", "1e-30", 1), ("trained", "1e-2", 25)):
        sets = [f"max_steps={steps}", f"learning_rate={lr}", "logging_steps=5", "eval_steps=10", f"eval_split={held}"]
        out = train_rm.run(stages.resolve("train-rm", sets=sets), data, str(tiny_lm), tmp_path / name)
        finals[name] = json.loads((out / "alignctl.json").read_text())["final_metrics"]
    before, after = finals["untrained"], finals["trained"]
    assert before["eval_pairs"] == after["eval_pairs"] == 12
    assert 0.25 <= before["eval_accuracy"] <= 0.75, before  # the rule is not in the seeded head
    assert after["eval_accuracy"] >= 11 / 12, after
    assert after["eval_accuracy"] - before["eval_accuracy"] >= 0.25
    assert after["eval_loss"] < before["eval_loss"] - 0.2
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_accuracy" in r for r in rows) and any("loss" in r for r in rows)

    # the saved dir scores like the trained model: the right answer above the wrong one on a prompt it never saw
    rm, tok = models.load_reward_model(str(out)), models.load_tokenizer(str(out), padding_side="right")
    for word, good, bad in (("hot", "yes", "no"), ("cold", "no", "yes")):
        texts = [f"Is the night {word}? {a}{tok.eos_token}" for a in (good, bad)]
        with torch.no_grad():
            scores = rm(**tok(texts, return_tensors="pt", padding=True)).logits[:, 0]
        assert scores[0] > scores[1], (word, scores)


def test_trl_reward_loss_and_our_held_out_metrics_match_the_chapter_formula(tmp_path, tiny_lm):
    """On fixed rewards, TRL's RewardTrainer loss (configured from the train-rm preset) and the
    held-out loss, margin and accuracy `train_rm.pair_accuracy` reports equal the chapter's
    L = -log σ(r_c - r_r) (oracles.reward_model_loss, hand-checked in test_oracles).

    By hand: r_c - r_r = [2, 0, -1] -> losses ln(1 + e^-2) = 0.126928, ln 2 = 0.693147,
    ln(1 + e) = 1.313262, mean 0.711112; margin 1/3 = 0.333333; accuracy 1/3 (a tie is wrong).
    """
    from types import SimpleNamespace

    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from alignctl import config, models, training
    from alignctl.stages.train_rm import pair_accuracy
    from oracles import reward_model_loss

    resolved = stages.resolve("train-rm")
    config.adjust_for_device(resolved, cuda=False)
    resolved.override("gradient_checkpointing", False, "test")
    args = RewardConfig(**training.trl_kwargs(RewardConfig, resolved, SimpleNamespace(work=tmp_path / "out")))
    trainer = RewardTrainer(
        model=models.load_reward_model(str(tiny_lm)),
        args=args,
        train_dataset=Dataset.from_list(toy_preferences(2)),
        processing_class=models.load_tokenizer(str(tiny_lm), padding_side="right"),
    )
    chosen, rejected = torch.tensor([3.0, 0.5, -1.0]), torch.tensor([1.0, 0.5, 0.0])
    logits = torch.cat([chosen, rejected])[:, None]  # a batch is the chosen rows, then the rejected ones

    class FixedScores:
        """Stands in for the reward model: the same scores whatever the batch."""

        training = False

        def __call__(self, **kwargs):
            return SimpleNamespace(logits=logits)

        def eval(self):
            return self

        def train(self, mode=True):
            return self

    batch = {"input_ids": torch.ones(6, 2, dtype=torch.long), "attention_mask": torch.ones(6, 2, dtype=torch.long)}
    trl_loss = trainer.compute_loss(FixedScores(), dict(batch))
    expected = reward_model_loss(chosen, rejected)
    assert torch.allclose(trl_loss, expected, atol=1e-6)
    assert abs(expected.item() - 0.711112) < 1e-5

    ours = pair_accuracy(SimpleNamespace(model=FixedScores(), get_eval_dataloader=lambda ds: [batch]), None)
    assert ours["eval_loss"] == pytest.approx(trl_loss.item(), abs=1e-6)
    assert ours["eval_margin"] == pytest.approx(1 / 3, abs=1e-6)
    assert ours["eval_accuracy"] == pytest.approx(1 / 3, abs=1e-6) and ours["eval_pairs"] == 3


def test_malformed_prefs_fail_before_any_model_loads(tmp_path, run):
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n')
    proc = run("train-rm", "--data", path, "--model", tmp_path / "nope", "-o", tmp_path / "out")
    assert proc.returncode == 2 and f"{path}:2:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.slow
def test_smollm2_two_steps(tmp_path, run):
    prefs = [{"prompt": f"What is {a} + {a}?", "chosen": f" {2 * a}.", "rejected": " I don't know."} for a in range(8)]
    write_jsonl(tmp_path / "prefs.jsonl", prefs)
    proc = run(
        "train-rm", "--data", "prefs.jsonl", "--model", "smollm2-135m", "--max-steps", "2", "--batch-size", "2",
        "--max-length", "64", "--eval-split", "0.25", "-o", "rm", cwd=tmp_path, timeout=300, env=ONE_THREAD,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    from alignctl import models

    assert models.load_reward_model(str(tmp_path / "rm")).config.num_labels == 1
    final = json.loads((tmp_path / "rm" / "alignctl.json").read_text())["final_metrics"]
    assert final["global_step"] == 2 and final["eval_pairs"] == 2


def test_same_inputs_and_seed_give_the_same_reward_model(tmp_path, tiny_lm):
    """The score head is created when the model loads, before TRL seeds anything: two runs with the
    same data and seed must still train the same model (the demo's RM accuracy once moved between
    identical runs, 0.67 vs 0.54, because the head was initialised unseeded)."""
    from safetensors.torch import load_file

    from alignctl.stages import train_rm

    data = write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(8))
    outs = []
    for name in ("a", "b"):
        import torch

        torch.manual_seed(len(outs) * 1234 + 7)  # whatever the RNG held before must not matter
        resolved = stages.resolve("train-rm", sets=["max_steps=2", "logging_steps=1"])
        outs.append(train_rm.run(resolved, data, str(tiny_lm), tmp_path / name))
    a, b = (load_file(o / "model.safetensors") for o in outs)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
