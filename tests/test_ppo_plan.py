"""`alignctl ppo` before any model loads: bad settings refused in one message, and the batch
plan (which prompts each update takes, TRL's batch arithmetic, left padding)."""

from __future__ import annotations

import pytest

from alignctl import stages
from tiny import write_jsonl


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "PPO needs a reward"),
        (["--reward", "judge:smollm2-135m"], "pairwise"),
        (["--reward", "rule:qa", "--reward-model", "x"], "either --reward-model or --reward"),
        (["--reward", "rule:nope"], "nope"),
        (["--reward", "rule:qa", "--kl-estimator", "k2", "--temperature", "0"], "kl_estimator must be one of k1, k3"),
        (["--reward", "rule:qa", "--set", "num_mini_batches=3"], "multiple of num_mini_batches"),
    ],
)
def test_bad_input_fails_before_any_model_loads(tmp_path, cli, args, message, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output, runs/ppo, lands here if anything is written
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    # the model does not exist: an error about anything else proves the check came first
    code, _, err = cli("ppo", "--prompts", tmp_path / "p.jsonl", "--model", tmp_path / "nope", *args)
    assert code == 2 and message in err, err
    if "k2" in args:
        assert "temperature must be > 0" in err  # every problem in one message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


def test_batch_indices_cover_each_prompt_once_per_pass():
    from alignctl.stages.ppo.rollout import batch_indices

    n, batch = 10, 4
    seen = [i for u in range(5) for i in batch_indices(u, batch, n, seed=3)]  # 20 = two passes
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert seen[:10] != seen[10:]  # reshuffled each pass
    assert batch_indices(3, batch, n, seed=3) == seen[12:16]  # a pure function: resume needs no state


def test_plan_uses_trl_batch_semantics():
    from alignctl.stages.ppo.trainer import make_plan

    chapter = stages.resolve("ppo").values  # batch 1 x accum 16, 10000 episodes
    p = make_plan(chapter, n_prompts=100, world=2)
    assert (p.local_batch, p.batch_size, p.num_updates, p.accum) == (16, 32, 313, 16)
    p = make_plan({**chapter, "num_mini_batches": 4, "total_episodes": None, "num_train_epochs": 2}, 64, 1)
    assert (p.local_batch, p.accum, p.mini_batches, p.num_updates) == (16, 4, 4, 8)


def test_left_padding_and_positions():
    import torch

    from alignctl.stages.ppo.rollout import left_pad, position_ids

    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    full = torch.cat([mask, torch.tensor([[1, 1], [1, 0]])], dim=1)
    assert position_ids(full).tolist() == [[0, 1, 2, 3, 4], [0, 0, 0, 1, 1]]
