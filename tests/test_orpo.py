"""`alignctl orpo` on a tiny local model: it learns the preference with one model in memory (no
reference), reads what dpo reads, and fails on bad input with one line."""

from __future__ import annotations

import json

import pytest

from alignctl import stages
from tiny import toy_preferences, write_jsonl

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _rows(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_orpo_learns_the_preference_without_a_reference_model(tmp_path, tiny_lm, monkeypatch, caplog, lr="1e-2"):
    """16 steps on the separable toy set: the chosen answers' log-odds over the rejected ones'
    (TRL's log_odds_chosen) rise from about 0 to above 1, and the answers' NLL falls; one model was
    loaded (ORPO has no reference). At learning rate 0 nothing moves (tried: `lr="0"` fails). TRL has
    nothing to say about the run's settings: the preset keeps the columns its pair collator reads."""
    from alignctl import models
    from alignctl.stages import orpo

    loaded = []
    real = models.load_causal_lm
    monkeypatch.setattr(models, "load_causal_lm", lambda *a, **k: loaded.append(a) or real(*a, **k))
    data = write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(32))
    sets = ["warmup_steps=0", "logging_steps=1", f"learning_rate={lr}", "max_steps=16", "use_peft=false"]
    resolved = stages.resolve("orpo", sets=[*sets, "per_device_train_batch_size=4"])
    out = orpo.run(resolved, data, str(tiny_lm), tmp_path / "out")
    rows = [r for r in _rows(out) if "log_odds_chosen" in r]
    first, last = rows[0], rows[-1]
    assert abs(first["log_odds_chosen"]) < 0.5 and last["log_odds_chosen"] > 1.0, (first, last)
    assert last["nll_loss"] < first["nll_loss"] - 1.0, (first, last)
    assert len(loaded) == 1
    manifest = json.loads((out / "alignctl.json").read_text())
    assert manifest["stage"] == "orpo" and manifest["records"] == {"train": 32, "eval": 0}
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("trl")]


def test_orpo_reads_every_preference_shape_and_holds_out_pairs(tmp_path, tiny_lm, run):
    """Implicit conversational pairs, a held-out fraction: TRL's own evaluation of the final model."""
    user = [{"role": "user", "content": "Is the sky blue?"}]
    pairs = [
        {"chosen": user + [{"role": "assistant", "content": f"yes {i}"}], "rejected": user + [
            {"role": "assistant", "content": f"no {i}"}]}
        for i in range(8)
    ]  # fmt: skip
    write_jsonl(tmp_path / "prefs.jsonl", pairs)
    proc = run("orpo", "-d", "prefs.jsonl", "-m", tiny_lm, "--max-steps", "1", "--eval-split", "0.25", "-o", "out",
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((tmp_path / "out" / "alignctl.json").read_text())
    assert manifest["records"] == {"train": 6, "eval": 2} and "eval_log_odds_chosen" in manifest["final_metrics"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "ref_model=x"], "unknown key 'ref_model' for orpo"),
        (["--set", "loss_type=ipo"], "unknown key 'loss_type' for orpo"),
        (["--set", "precompute_ref_log_probs=true"], "unknown key 'precompute_ref_log_probs' for orpo"),
        (["--beta", "x"], "Invalid value for '--beta'"),
    ],
)
def test_reference_settings_are_unknown_to_orpo(tmp_path, cli, extra, message):
    from refusals import fails_writing_nothing

    write_jsonl(tmp_path / "p.jsonl", toy_preferences(2))
    err = fails_writing_nothing(cli, tmp_path, "orpo", "-d", "p.jsonl", "-m", tmp_path / "nowhere", "-o", "o", *extra)
    assert message in err, err


@pytest.mark.slow
def test_smollm2_orpo_raises_the_chosen_log_odds(tmp_path, run):
    """The embedded SmolLM2 with LoRA: 8 steps on the example pairs; the chosen answers' log-odds
    over the rejected ones' end higher than at step 1."""
    from conftest import REPO

    proc = run(
        "orpo", "--data", REPO / "examples" / "prefs.jsonl", "--model", "smollm2-135m", "--max-steps", "8",
        "--batch-size", "4", "--learning-rate", "2e-4", "--set", "use_peft=true", "--set", "max_length=256",
        "--set", "logging_steps=1", "-o", "orpo", cwd=tmp_path, timeout=900, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [r for r in _rows(tmp_path / "orpo") if "log_odds_chosen" in r]
    assert rows[-1]["step"] == 8 and rows[-1]["log_odds_chosen"] > rows[0]["log_odds_chosen"], rows
