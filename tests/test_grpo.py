"""`alignctl grpo` on a tiny local model: it runs, it learns a rule, prompts are capped, advantages match."""

from __future__ import annotations

import json

import pytest

from alignctl import stages
from tiny import write_jsonl

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


SUBJECTS = ("paris", "rome", "the sky", "the sun", "tokyo", "berlin")
PROMPTS = [{"prompt": f"Is {s} {c}?", "answer": "yes"} for s in SUBJECTS for c in ("red", "blue", "big", "hot")]

# Dense enough for a 2-layer random model to learn in a few steps: the share of answer tokens
# drawn from the lower half of the vocabulary (about 0.5 at the start). It also checks that the
# prompts file's extra column reaches the reward function, as TRL's signature promises.
RULE_FILE = """
def low_ids(prompts, completions, completion_ids, answer, **kwargs):
    assert answer == ["yes"] * len(completions), answer
    return [sum(t < 200 for t in ids) / max(1, len(ids)) for ids in completion_ids]
"""


def test_cli_run_with_two_reward_sources(tmp_path, tiny_lm, tiny_rm, cli, monkeypatch):
    """`alignctl grpo --prompts p.jsonl --reward rm:RM --reward rule:f.py:func --reward-weights 1,0.5`."""
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "p.jsonl", PROMPTS[:4])
    (tmp_path / "rules.py").write_text(RULE_FILE)
    code, stdout, stderr = cli(
        "grpo", "--prompts", "p.jsonl", "--reward", f"rm:{tiny_rm}", "--reward", "rule:rules.py:low_ids",
        "--reward-weights", "1,0.5", "--model", tiny_lm, "--max-steps", "2", "--num-generations", "4",
        "--batch-size", "4", "--max-completion-length", "8", "-o", "out",
    )  # fmt: skip
    assert code == 0, stderr[-2000:]
    assert stdout.strip() == "out"
    assert "sampler: hf (transformers generate; " in stderr  # the chapter's vLLM needs CUDA or --backend vllm: one line
    assert manifest_sampler(tmp_path / "out") == {"backend": "hf", "by": "transformers generate"}
    out = tmp_path / "out"
    manifest = json.loads((out / "alignctl.json").read_text())
    assert manifest["config"]["reward_weights"] == {"value": [1.0, 0.5], "source": "flag --reward-weights"}
    assert manifest["config"]["beta"]["value"] == 0.04 and "GRPO" in manifest["config"]["beta"]["source"]
    assert [r["kind"] for r in manifest["rewards"]] == ["reward_model", "rule"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/rules.low_ids/mean" in r for r in rows) and any("reward" in r for r in rows)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)


def test_grpo_learns_a_rule(tmp_path, tiny_lm):
    """Mean reward of the last 5 of 16 steps clearly above the first 5 (measured: 0.51 -> 0.99)."""
    import torch
    from safetensors.torch import load_file

    from alignctl.stages import grpo

    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    (tmp_path / "rules.py").write_text(RULE_FILE)
    resolved = stages.resolve(
        "grpo",
        sets=[
            "max_steps=16", "learning_rate=5e-2", "num_generations=8", "per_device_train_batch_size=16",
            "max_completion_length=16", "beta=0.0",
        ],
    )  # fmt: skip
    out = grpo.run(resolved, prompts, [f"rule:{tmp_path / 'rules.py'}:low_ids"], str(tiny_lm), tmp_path / "out")
    rewards = [r["reward"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "reward" in r]
    assert len(rewards) == 16
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.2, rewards
    before, after = load_file(tiny_lm / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_trl_group_advantage_is_the_chapter_formula(tiny_lm):
    """TRL's advantages for one group equal oracles.group_advantages, A = (r - mean) / (std + 1e-4).

    By hand for r = [1, 0, 0.5, 2]: mean 0.875, unbiased std sqrt(2.1875 / 3) = 0.853913, so
    A = [0.125, -0.875, -0.375, 1.125] / 0.854013 = [0.14637, -1.02458, -0.43910, 1.31731].
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from oracles import group_advantages

    values = [1.0, 0.0, 0.5, 2.0]
    args = GRPOConfig(
        output_dir=str(tiny_lm.parent / "adv"), num_generations=4, per_device_train_batch_size=4,
        max_completion_length=4, use_cpu=True, bf16=False, report_to="none", gradient_checkpointing=False,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_lm),
        reward_funcs=lambda prompts, completions, **kw: values,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "Is paris big?"}] * 4),
        processing_class=AutoTokenizer.from_pretrained(tiny_lm),
    )
    trl_adv = trainer._generate_and_score_completions([{"prompt": "Is paris big?"}] * 4)["advantages"]
    ours = group_advantages(torch.tensor(values), 4)
    assert torch.allclose(trl_adv, ours, atol=1e-5)
    assert torch.allclose(ours, torch.tensor([0.14637, -1.02458, -0.43910, 1.31731]), atol=1e-4)


def test_strict_rejects_before_training(tmp_path, tiny_lm, cli):
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "what is the capital of france " * 30}])
    code, _, err = cli(
        "grpo", "--prompts", tmp_path / "p.jsonl", "--reward", "rule:length", "--model", tiny_lm, "--strict",
        "-o", tmp_path / "out", "--max-prompt-length", "16",
    )  # fmt: skip
    assert code == 2 and "longer than max_prompt_length=16" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--reward", "rule:length", "--reward-weights", "1,2"], "2 values for 1 reward source"),
        ([], "give at least one --reward"),
        (["--reward", "rule:lenght"], "lenght"),
        (["--reward", "judge:x"], "use a judge with online-dpo --judge"),
    ],
)
def test_bad_reward_specs_fail_fast(tmp_path, tiny_lm, cli, extra, message):
    write_jsonl(tmp_path / "p.jsonl", PROMPTS[:2])
    code, _, err = cli("grpo", "--prompts", tmp_path / "p.jsonl", "--model", tiny_lm, "-o", tmp_path / "o", *extra)
    assert code == 2 and message in err
    assert not (tmp_path / "o.partial").exists()


def test_a_causal_lm_is_not_a_reward_model(tmp_path, tiny_lm, cli):
    write_jsonl(tmp_path / "p.jsonl", PROMPTS[:2])
    code, _, err = cli("grpo", "--prompts", tmp_path / "p.jsonl", "--model", tiny_lm, "--reward", f"rm:{tiny_lm}")
    assert code == 2 and "not a reward model" in err


def test_generation_batch_is_fixed_up_with_a_note(capsys):
    from alignctl.training.fit import whole_groups

    r = stages.resolve("grpo", sets=["per_device_train_batch_size=6"])  # 6 is not a multiple of 8 generations
    whole_groups(r, "grpo", world_size=1)
    assert r["generation_batch_size"] == 24 and r.sources["generation_batch_size"].startswith("auto")
    assert "generation_batch_size 6 -> 24" in capsys.readouterr().err
    r = stages.resolve("grpo", sets=["per_device_train_batch_size=4", "num_generations=4"])
    whole_groups(r, "grpo", world_size=1)
    assert r["generation_batch_size"] is None  # already whole groups: untouched


def manifest_sampler(out):
    return json.loads((out / "alignctl.json").read_text())["sampler"]


def test_presets_show_grpo_prints_the_chapters_values(cli):
    code, out, _ = cli("presets", "show", "grpo")
    assert code == 0
    flat = " ".join(out.split())
    for key, value in [("num_generations", "8"), ("temperature", "0.9"), ("max_completion_length", "256"),
                       ("max_prompt_length", "512"), ("beta", "0.04"), ("backend", "'auto'")]:  # fmt: skip
        assert f"{key} │ {value} │ preset grpo: 强化学习 GRPO" in flat, key


@pytest.mark.slow
def test_smollm2_two_steps(tmp_path, run):
    qa = [("France", "Paris"), ("Italy", "Rome")]
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"What is the capital of {c}?", "answer": a} for c, a in qa])
    proc = run(
        "grpo", "--prompts", "p.jsonl", "--reward", "rule:qa", "--model", "smollm2-135m", "--max-steps", "2",
        "--num-generations", "2", "--batch-size", "2", "--max-completion-length", "12", "--set", "use_peft=true",
        "-o", "out",
        cwd=tmp_path, timeout=300, env=ONE_THREAD,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "alignctl.json").read_text())["final_metrics"]["global_step"] == 2
