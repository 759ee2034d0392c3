"""`alignctl rloo` on a tiny local model: grpo's reward sources, it learns a rule, TRL's advantage is
the leave-one-out one, bad input is one line."""

from __future__ import annotations

import json

import pytest

from alignctl import stages
from tiny import write_jsonl

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SUBJECTS = ("paris", "rome", "the sky", "the sun", "tokyo", "berlin")
PROMPTS = [{"prompt": f"Is {s} {c}?", "answer": "yes"} for s in SUBJECTS for c in ("red", "blue", "big", "hot")]
# dense enough for a 2-layer random model to learn in a few steps (as in tests/test_grpo.py): the share
# of answer tokens from the lower half of the vocabulary; it also checks the prompts' extra column
RULE_FILE = """
def low_ids(prompts, completions, completion_ids, answer, **kwargs):
    assert answer == ["yes"] * len(completions), answer
    return [sum(t < 200 for t in ids) / max(1, len(ids)) for ids in completion_ids]
"""


def _rows(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_cli_run_with_two_reward_sources(tmp_path, tiny_lm, tiny_rm, cli, monkeypatch):
    """`alignctl rloo -p p.jsonl -r rm:RM -r rule:f.py:func --reward-weights 1,0.5`: grpo's sources."""
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "p.jsonl", PROMPTS[:4])
    (tmp_path / "rules.py").write_text(RULE_FILE)
    code, stdout, stderr = cli(
        "rloo", "-p", "p.jsonl", "-r", f"rm:{tiny_rm}", "-r", "rule:rules.py:low_ids", "--reward-weights", "1,0.5",
        "--model", tiny_lm, "--max-steps", "2", "--num-generations", "4", "--batch-size", "4",
        "--max-completion-length", "8", "-o", "out",
    )  # fmt: skip
    assert code == 0, stderr[-2000:]
    assert stdout.strip() == "out"
    manifest = json.loads((tmp_path / "out" / "alignctl.json").read_text())
    assert manifest["stage"] == "rloo" and [r["kind"] for r in manifest["rewards"]] == ["reward_model", "rule"]
    beta = manifest["config"]["beta"]
    assert beta["value"] == 0.05 and beta["source"].startswith("preset rloo")
    assert any("rewards/rules.low_ids/mean" in r for r in _rows(tmp_path / "out"))


def test_rloo_learns_a_rule(tmp_path, tiny_lm, lr="5e-2"):
    """Mean reward of the last 5 of 16 steps clearly above the first 5; weights changed. At learning
    rate 0 the reward stays where it starts (tried: `lr="0"` fails the reward assertion)."""
    import torch
    from safetensors.torch import load_file

    from alignctl.stages import rloo

    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    (tmp_path / "rules.py").write_text(RULE_FILE)
    sets = ["max_steps=16", f"learning_rate={lr}", "num_generations=8", "per_device_train_batch_size=16"]
    resolved = stages.resolve("rloo", sets=[*sets, "max_completion_length=16", "beta=0.0"])
    out = rloo.run(resolved, prompts, [f"rule:{tmp_path / 'rules.py'}:low_ids"], str(tiny_lm), tmp_path / "out")
    rewards = [r["reward"] for r in _rows(out) if "reward" in r]
    assert len(rewards) == 16
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.2, rewards
    before, after = load_file(tiny_lm / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_trl_advantage_is_the_leave_one_out_baseline(tiny_lm):
    """A_i = r_i - mean of the other k - 1 rewards (beta 0: no KL in the reward).

    By hand for r = [1, 0, 0.5, 2]: baselines (0 + 0.5 + 2) / 3 = 0.8333, (1 + 0.5 + 2) / 3 = 1.1667,
    (1 + 0 + 2) / 3 = 1, (1 + 0 + 0.5) / 3 = 0.5, so A = [0.1667, -1.1667, -0.5, 1.5].
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    values = [1.0, 0.0, 0.5, 2.0]
    config_cls, trainer_cls = stages.load("rloo").TRAINER.classes()
    args = config_cls(
        output_dir=str(tiny_lm.parent / "loo"), num_generations=4, per_device_train_batch_size=4, beta=0.0,
        max_completion_length=4, use_cpu=True, bf16=False, report_to="none", gradient_checkpointing=False,
    )  # fmt: skip
    trainer = trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_lm),
        reward_funcs=lambda prompts, completions, **kw: values,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "Is paris big?"}] * 4),
        processing_class=AutoTokenizer.from_pretrained(tiny_lm),
    )
    advantages = trainer._generate_and_score_completions([{"prompt": "Is paris big?"}] * 4)["advantages"]
    assert torch.allclose(advantages, torch.tensor([1 / 6, -7 / 6, -0.5, 1.5]), atol=1e-5)


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "give at least one --reward"),
        (["-r", "judge:x"], "a pairwise source compares two answers"),
        (["-r", "rule:lenght"], "lenght"),
        (["-r", "rule:length", "--reward-weights", "1,2"], "2 values for 1 reward source"),
        (["-r", "rule:length", "--num-generations", "1"], "--num-generations: num_generations must be >= 2, got 1"),
        (["-r", "rule:length", "--set", "num_generatoins=4"], "did you mean 'num_generations'"),
    ],
)
def test_bad_rloo_input_is_one_line_and_writes_nothing(tmp_path, cli, extra, message):
    from refusals import fails_writing_nothing

    write_jsonl(tmp_path / "p.jsonl", PROMPTS[:2])
    err = fails_writing_nothing(cli, tmp_path, "rloo", "-p", "p.jsonl", "-m", tmp_path / "nowhere", "-o", "o", *extra)
    assert message in err, err


@pytest.mark.slow
def test_smollm2_rloo_runs_on_the_qa_rule(tmp_path, run):
    """The embedded SmolLM2 on the QA prompts with the graded QA rule: two steps, each logs a reward."""
    from conftest import REPO

    proc = run(
        "rloo", "--prompts", REPO / "examples" / "qa" / "train.jsonl", "--reward", "rule:qa", "--model",
        "smollm2-135m", "--max-steps", "2", "--num-generations", "2", "--batch-size", "4",
        "--max-completion-length", "16", "--learning-rate", "1e-5", "-o", "rloo", cwd=tmp_path, timeout=900,
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [r for r in _rows(tmp_path / "rloo") if "reward" in r]
    assert [r["step"] for r in rows] == [1, 2] and all(0 <= r["reward"] <= 1 for r in rows), rows
