"""`alignctl kto` on a tiny local model: unpaired and preference input, it learns, label --unpaired feeds it."""

from __future__ import annotations

import json

import pytest

from alignctl import io
from tiny import toy_preferences, write_jsonl

LEARN = ("--learning-rate", "5e-3", "--set", "logging_steps=1", "--set", "warmup_steps=0", "--batch-size", "4")


GOOD = '{"prompt": "q", "completion": "c", "label": false}\n'


def _rows(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_kto_learns_desirable_over_undesirable(tmp_path, tiny_lm, run):
    """Desirable answers' implied reward β·log πθ/π_ref rises above the undesirable ones'.

    At step 1 the policy is the reference, so both rewards are 0; after 24 steps on the toy set
    (" yes good" desirable, " no bad" not) the chosen reward must be clearly above the rejected one.
    """
    import torch
    from safetensors.torch import load_file

    unpaired = [u for r in toy_preferences(32) for u in io.unpair(r)]
    write_jsonl(tmp_path / "unpaired.jsonl", unpaired)
    proc = run("kto", "--data", "unpaired.jsonl", "-m", tiny_lm, "--max-steps", "24", *LEARN, "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "out"
    rows = [r for r in _rows(out) if "rewards/chosen" in r and "rewards/rejected" in r]
    first, last = rows[0], rows[-1]
    assert abs(first["rewards/chosen"]) < 0.05 and abs(first["rewards/rejected"]) < 0.05
    assert last["rewards/chosen"] > last["rewards/rejected"] + 1.0, last
    before, after = load_file(tiny_lm / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    manifest = json.loads((out / "alignctl.json").read_text())
    assert manifest["stage"] == "kto" and manifest["records"] == {"train": 64, "eval": 0, "desirable": 32}


def test_kto_reads_preference_files_and_label_unpaired(tmp_path, tiny_lm, run):
    """A preference file trains kto directly; `label --unpaired` writes what kto reads."""
    write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(4))
    proc = run("kto", "--data", "prefs.jsonl", "-m", tiny_lm, "--max-steps", "1", "-o", "from-prefs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "from-prefs" / "alignctl.json").read_text())["records"]["train"] == 8

    cands = [
        {"id": f"q{i}", "prompt": f"What is {i} + 1?", "answer": str(i + 1), "completions": [str(i + 1), "no idea"]}
        for i in range(3)
    ]
    write_jsonl(tmp_path / "cands.jsonl", cands)
    proc = run(
        "label", "-c", "cands.jsonl", "--by", "rule:accuracy", "--unpaired", "-o", "unpaired.jsonl", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = io.load(tmp_path / "unpaired.jsonl", "unpaired")
    assert [(r["id"], r["completion"], r["label"]) for r in records] == [
        (f"q{i}", c, good) for i in range(3) for c, good in ((str(i + 1), True), ("no idea", False))
    ]
    proc = run("kto", "-d", "unpaired.jsonl", "-m", tiny_lm, "--max-steps", "1", "-o", "from-label", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD + '{"prompt": "a", "completion": "b", "label": "yes"}', 'u.jsonl:2: "label" must be true (desirable) or'),
        (GOOD + '{"prompt": "a", "label": true}', 'u.jsonl:2: "completion" is missing'),
        ('{"prompt": "a"}', "holds prompts records, expected unpaired or preferences"),
    ],
)
def test_bad_unpaired_input_is_one_line_and_writes_nothing(tmp_path, run, text, message):
    (tmp_path / "u.jsonl").write_text(text + "\n")
    proc = run("kto", "-d", "u.jsonl", "-m", tmp_path / "no-model", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.jsonl"]


@pytest.mark.slow
def test_smollm2_kto_moves_rewards_apart(tmp_path, run):
    """The embedded SmolLM2 with LoRA: 8 steps on the example pairs, unpaired; desirable answers'
    implied reward ends above the undesirable ones' (both are 0 at step 1)."""
    from conftest import REPO

    proc = run(
        "kto", "--data", REPO / "examples" / "prefs.jsonl", "--model", "smollm2-135m", "--max-steps", "8",
        "--batch-size", "4", "--learning-rate", "2e-4", "--set", "use_peft=true", "--set", "max_length=256",
        "--set", "logging_steps=1", "-o", "kto", cwd=tmp_path, timeout=900, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [r for r in _rows(tmp_path / "kto") if "rewards/chosen" in r and "rewards/rejected" in r]
    assert rows[-1]["step"] >= 6 and rows[-1]["rewards/chosen"] > rows[-1]["rewards/rejected"], rows[-1]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "kto")
