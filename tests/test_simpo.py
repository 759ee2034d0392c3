"""`alignctl simpo` on a tiny local model: TRL's CPO trainer computes SimPO's loss with the preset's
β and γ, it learns the preference with one model in memory, and bad settings are one line."""

from __future__ import annotations

import json
import math

import pytest

from alignctl import stages
from tiny import toy_preferences, write_jsonl

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _rows(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_the_loss_is_simpos_with_the_presets_beta_and_gamma(tmp_path, tiny_lm):
    """L = -log σ(β·(mean log p(y_w) - mean log p(y_l)) - γ), β 2 and γ 1 from the preset, no NLL term.

    By hand: mean log-probs (-1, -2) give -log σ(2·1 - 1) = -log σ(1) = 0.313262; (-2, -1.5) give
    -log σ(2·(-0.5) - 1) = -log σ(-2) = 2.126928.
    """
    from types import SimpleNamespace

    import torch
    from datasets import Dataset

    from alignctl import config, models, training

    resolved = stages.resolve("simpo")
    config.adjust_for_device(resolved, cuda=False)
    config_cls, trainer_cls = stages.load("simpo").TRAINER.classes()
    args = config_cls(**training.trl_kwargs(config_cls, resolved, SimpleNamespace(work=tmp_path / "out")))
    trainer = trainer_cls(
        model=models.load_causal_lm(str(tiny_lm)),
        args=args,
        train_dataset=Dataset.from_list(toy_preferences(2)),
        processing_class=models.load_tokenizer(str(tiny_lm)),
    )
    assert (trainer.loss_type, trainer.cpo_alpha, trainer.beta, trainer.simpo_gamma) == ("simpo", 0.0, 2.0, 1.0)
    losses, _, _ = trainer.cpo_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -1.5]))
    expected = [-math.log(1 / (1 + math.exp(-1))), -math.log(1 / (1 + math.exp(2)))]
    assert torch.allclose(losses, torch.tensor(expected), atol=1e-5), losses
    assert expected == pytest.approx([0.313262, 2.126928], abs=1e-6)


def test_simpo_learns_the_preference_with_one_model(tmp_path, tiny_lm, monkeypatch, caplog, lr="1e-2"):
    """16 steps on the separable toy set: the reward margin β·(mean log p(chosen) - mean log p(rejected))
    goes from about 0 to above 1 and every pair is ranked right; one model was loaded (no reference).
    At learning rate 0 the margin stays near 0 (tried: `lr="0"` fails). TRL has nothing to say about
    the run's settings: the preset keeps the columns its pair collator reads (without it, it warns)."""
    from alignctl import models
    from alignctl.stages import simpo

    loaded = []
    real = models.load_causal_lm
    monkeypatch.setattr(models, "load_causal_lm", lambda *a, **k: loaded.append(a) or real(*a, **k))
    data = write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(32))
    sets = ["warmup_steps=0", "logging_steps=1", f"learning_rate={lr}", "max_steps=16", "use_peft=false"]
    out = simpo.run(stages.resolve("simpo", sets=[*sets, "per_device_train_batch_size=4"]), data, str(tiny_lm),
                    tmp_path / "out")  # fmt: skip
    rows = [r for r in _rows(out) if "rewards/margins" in r]
    first, last = rows[0], rows[-1]
    assert abs(first["rewards/margins"]) < 0.5 and last["rewards/margins"] > 1.0, (first, last)
    assert last["rewards/accuracies"] == 1.0 and len(loaded) == 1
    manifest = json.loads((out / "alignctl.json").read_text())
    assert manifest["stage"] == "simpo" and manifest["records"] == {"train": 32, "eval": 0}
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("trl")]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "loss_type=sigmoid"], "simpo: loss_type must be simpo or alphapo, got 'sigmoid'"),
        (["--beta", "0"], "beta must be > 0"),
        (["--set", "ref_model=x"], "unknown key 'ref_model' for simpo"),
        (["--simpo-gamma", "x"], "Invalid value for '--simpo-gamma'"),
    ],
)
def test_bad_simpo_settings_are_one_line_and_write_nothing(tmp_path, cli, extra, message):
    from refusals import fails_writing_nothing

    write_jsonl(tmp_path / "p.jsonl", toy_preferences(2))
    err = fails_writing_nothing(cli, tmp_path, "simpo", "-d", "p.jsonl", "-m", tmp_path / "x", "-o", "o", *extra)
    assert message in err, err


@pytest.mark.slow
def test_smollm2_simpo_moves_the_margin(tmp_path, run):
    """The embedded SmolLM2 with LoRA: 8 steps on the example pairs; the reward margin ends above
    step 1's."""
    from conftest import REPO

    proc = run(
        "simpo", "--data", REPO / "examples" / "prefs.jsonl", "--model", "smollm2-135m", "--max-steps", "8",
        "--batch-size", "4", "--learning-rate", "2e-4", "--set", "use_peft=true", "--set", "max_length=256",
        "--set", "logging_steps=1", "-o", "simpo", cwd=tmp_path, timeout=900, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [r for r in _rows(tmp_path / "simpo") if "rewards/margins" in r]
    assert rows[-1]["step"] == 8 and rows[-1]["rewards/margins"] > rows[0]["rewards/margins"], rows
