"""`alignctl dpo` end to end on a tiny local model: it runs, it learns, it writes a complete run dir."""

from __future__ import annotations

import json

import pytest

from alignctl import stages
from tiny import toy_preferences, write_jsonl

CONV = [{"role": "user", "content": "Is the sky blue?"}]

THREE_SHAPES = {
    "implicit-standard": [
        {"chosen": "Is the sky blue? yes good", "rejected": "Is the sky blue? no bad"},
        {"chosen": "Is paris big? yes good", "rejected": "Is paris big? no bad"},
        {"chosen": "Is the sun hot? yes good", "rejected": "Is the sun hot? no bad"},
    ],
    "implicit-conversational": [
        {
            "chosen": CONV + [{"role": "assistant", "content": f"yes good {i}"}],
            "rejected": CONV + [{"role": "assistant", "content": f"no bad {i}"}],
        }
        for i in range(3)
    ],
    "explicit": [{"prompt": f"Is the sky {c}?", "chosen": " yes", "rejected": " no"} for c in ("red", "blue", "green")],
}


@pytest.mark.parametrize("shape", sorted(THREE_SHAPES))
def test_users_example_runs_on_each_shape(tmp_path, tiny_lm, run, shape):
    """`alignctl dpo --data prefs.jsonl --beta 0.1` with a 3-line file of each shape."""
    write_jsonl(tmp_path / "prefs.jsonl", THREE_SHAPES[shape])
    proc = run("dpo", "--data", "prefs.jsonl", "--beta", "0.1", "--model", tiny_lm, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "runs" / "dpo"  # the documented default output dir
    assert proc.stdout.strip() == str(out.relative_to(tmp_path))
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)
    manifest = json.loads((out / "alignctl.json").read_text())
    assert manifest["stage"] == "dpo" and manifest["config"]["beta"] == {"value": 0.1, "source": "flag --beta"}
    assert manifest["inputs"]["data"]["sha256"] and manifest["libraries"]["trl"].startswith("1.16")
    assert (out / "metrics.jsonl").read_text().strip()
    assert "bf16 off" in proc.stderr  # the chapter's bf16, turned off on CPU with one line


def test_dpo_learns_a_separable_preference(tmp_path, tiny_lm):
    """After a few dozen steps: rewards/accuracies >= 0.9, margins up from step 1, weights changed."""
    import torch
    from safetensors.torch import load_file

    from alignctl.stages import dpo

    data = write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(32))
    resolved = stages.resolve(
        "dpo",
        sets=["warmup_steps=0", "optim=adamw_torch", "logging_steps=1", "learning_rate=5e-3", "max_steps=30"],
    )
    out = dpo.run(resolved, data, str(tiny_lm), tmp_path / "out")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "rewards/margins" in r]
    first, last = train_rows[0], train_rows[-1]
    assert last["step"] == 30
    assert last["rewards/accuracies"] >= 0.9
    assert last["rewards/margins"] > first["rewards/margins"] + 0.1
    before, after = load_file(tiny_lm / "model.safetensors"), load_file(out / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("q_proj" in k for k in changed) and any("mlp" in k for k in changed)  # merged LoRA, all-linear
    manifest = json.loads((out / "alignctl.json").read_text())
    assert manifest["final_metrics"]["global_step"] == 30


def test_rerun_is_up_to_date_and_existing_output_is_kept(tmp_path, tiny_lm, run):
    write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(4))
    args = ("dpo", "--data", "prefs.jsonl", "--model", tiny_lm, "--max-steps", "1", "-o", "out")
    assert run(*args, cwd=tmp_path).returncode == 0
    stamp = (tmp_path / "out" / "alignctl.json").stat().st_mtime_ns
    again = run(*args, cwd=tmp_path)
    assert again.returncode == 0 and "up to date" in again.stderr
    assert (tmp_path / "out" / "alignctl.json").stat().st_mtime_ns == stamp
    other = run(*args[:-2], "--beta", "0.2", "-o", "out", cwd=tmp_path)
    assert other.returncode == 2 and "--overwrite" in other.stderr
    assert run(*args[:-2], "--beta", "0.2", "-o", "out", "--overwrite", cwd=tmp_path).returncode == 0


def test_malformed_prefs_fail_before_any_model_loads(tmp_path, run):
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "rejected": "c"}\n')
    # the model dir does not exist: an error naming the data proves validation came first
    proc = run("dpo", "--data", path, "--model", tmp_path / "nope", "-o", tmp_path / "out")
    assert proc.returncode == 2 and f"{path}:2:" in proc.stderr and "Traceback" not in proc.stderr
    path.write_text(
        '{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
        '{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
        '{"prompt": \n'
    )
    proc = run("dpo", "--data", path, "--model", tmp_path / "nope", "-o", tmp_path / "out")
    assert proc.returncode == 2 and f"{path}:3:" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_trl_dpo_loss_matches_the_chapter_formula(tmp_path, tiny_lm):
    """TRL's loss, as alignctl configures it from the dpo preset, equals the chapter's formula
    (oracles.dpo_loss, hand-checked in test_oracles) on fixed log-probs.

    By hand, beta 0.1: z = 0.1·((pc − rc) − (pr − rr)) = 0.1·(1 − (−1)) = 0.2 and 0.1·(0 − 1) = −0.1;
    losses −log σ(0.2) = 0.598139, −log σ(−0.1) = 0.744397, mean 0.671268; rewards/chosen is the
    mean of 0.1·(pc − rc) = (0.1 + 0) / 2 = 0.05, rewards/rejected (−0.1 + 0.1) / 2 = 0.
    """
    from types import SimpleNamespace

    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from alignctl import config, models, training
    from oracles import dpo_loss

    resolved = stages.resolve("dpo")  # the chapter's preset: beta 0.1, loss_type sigmoid
    config.adjust_for_device(resolved, cuda=False)
    args = DPOConfig(**training.trl_kwargs(DPOConfig, resolved, SimpleNamespace(work=tmp_path / "out")))
    trainer = DPOTrainer(
        model=models.load_causal_lm(str(tiny_lm)),
        args=args,
        train_dataset=Dataset.from_list(toy_preferences(2)),
        processing_class=models.load_tokenizer(str(tiny_lm)),
    )
    pc, pr = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    rc, rr = torch.tensor([-11.0, -4.0]), torch.tensor([-11.0, -4.0])

    # A stand-in for the policy: TRL sums the per-token log-probs of each row (chosen rows first,
    # then rejected), so the whole answer's log-prob sits on its one completion token.
    per_token = torch.zeros(4, 2)
    per_token[:, 1] = torch.cat([pc, pr])

    def policy(**kwargs):
        zeros = torch.zeros(4, 2)
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    inputs = {
        "input_ids": torch.ones(4, 3, dtype=torch.long),
        "attention_mask": torch.ones(4, 3, dtype=torch.long),
        "completion_mask": torch.tensor([[0, 0, 1]] * 4),
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    trainer.precompute_ref_logps = True  # take the reference log-probs from the batch, as TRL does when precomputed
    trainer.model.train()  # TRL files the metrics under "train" or "eval" by the model's mode
    trl_loss = trainer._compute_loss(policy, inputs, return_outputs=False)

    losses, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, beta=resolved["beta"])
    assert resolved["beta"] == 0.1
    assert torch.allclose(trl_loss, losses.mean(), atol=1e-6)
    assert abs(trl_loss.item() - 0.671268) < 1e-5  # (0.598139 + 0.744397) / 2 by hand
    metrics = trainer._metrics["train"]
    assert metrics["rewards/chosen"] == [pytest.approx(chosen_rewards.mean().item(), abs=1e-6)]
    assert metrics["rewards/rejected"] == [pytest.approx(rejected_rewards.mean().item(), abs=1e-6)]
    assert metrics["rewards/chosen"][0] == pytest.approx(0.05, abs=1e-6)
    assert metrics["rewards/accuracies"] == [0.5]  # pair 0 has chosen reward 0.1 > -0.1, pair 1 has 0 < 0.1
