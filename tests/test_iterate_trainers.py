"""iterate as Llama 3 / Tulu 3 run it, on tiny models: the reward model retrained each round
(`--retrain-rm`), the initial model as DPO's reference, online DPO or KTO as the round's trainer;
SIGKILL in round 2 and a rerun give the uninterrupted run's outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_iterate import BY, _data, _same_weights, _tree

TRAIN = "[max_steps=4, learning_rate=1e-3, logging_steps=1, warmup_steps=0, optim=adamw_torch, save_steps=0]"
BASE = ["rounds=2", "num_samples=4", "max_new_tokens=8", "eval_max_new_tokens=8", f"dpo_set={TRAIN}"]
RM_SET = "rm_set=[max_steps=3, learning_rate=1e-3, logging_steps=1, save_steps=0, max_length=64]"
CASES = {
    "retrain-rm": (["retrain_rm=true", "reference=initial", RM_SET], "rm"),
    "online-dpo": (["trainer=online-dpo", "dpo_set=[max_steps=3, learning_rate=1e-3, per_device_train_batch_size=4, "
                    "max_new_tokens=8, logging_steps=1, save_steps=0]"], "rule"),
}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cmd(case: str, tmp: Path, tiny_lm: Path, tiny_rm: Path) -> list[str]:
    train, held = _data(tmp)
    sets, by = CASES[case]
    by = f"rm:{tiny_rm}" if by == "rm" else BY
    eval_by = ["--set", f"eval_by={BY}"]
    args = ["iterate", "-p", train, "--eval-prompts", held, "-m", tiny_lm, "--by", by, "-o", tmp / "it", *eval_by]
    flags = [x for s in [*BASE, *sets] for x in ("--set", s)]
    return [str(a) for a in (sys.executable, "-m", "alignctl", *args, *flags)]


def _env(tmp: Path) -> dict:
    return {**os.environ, "ALIGNCTL_HOME": str(tmp / "home"), "OMP_NUM_THREADS": "1"}


def _pair(line: str) -> tuple:
    r = json.loads(line)
    return r["prompt"], r["chosen"], r["rejected"], r["score_chosen"], r["score_rejected"]


@pytest.mark.long  # the default run keeps dpo's (tests/test_iterate.py)
@pytest.mark.parametrize("case", sorted(CASES))
def test_two_rounds_then_sigkill_in_round_2_and_rerun_gives_the_same_outputs(case, tmp_path, tiny_lm, tiny_rm):
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    ref_dir.mkdir()
    killed_dir.mkdir()
    cmd = _cmd(case, ref_dir, tiny_lm, tiny_rm)
    done = subprocess.run(cmd, env=_env(ref_dir), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    ref = ref_dir / "it"
    manifest = json.loads((ref / "alignctl.json").read_text())
    first, second = manifest["rounds"]
    if case == "retrain-rm":
        # round 2's reward model: trained on round 1's pairs, starting from the one given with --by
        rm2 = json.loads((ref / "round-2" / "rm" / "alignctl.json").read_text())
        assert rm2["parent_model"] == str(tiny_rm)
        assert (ref / "round-2" / "rm-train.jsonl").read_text() == (ref / "round-1" / "prefs.jsonl").read_text()
        assert not _same_weights(ref / "round-2" / "rm", tiny_rm)
        labels = [json.loads(x)["label"]["by"] for x in (ref / "round-2" / "prefs.jsonl").read_text().splitlines()]
        assert labels and set(labels) == {f"rm:{ref / 'round-2' / 'rm'}"}  # round 2 labelled with its new RM
        assert (first["reward_model"], second["reward_model"]) == (str(tiny_rm), str(ref / "round-2" / "rm"))
        # reference=initial: round 2's DPO starts from round 1's model, measured against the first one
        dpo2 = json.loads((ref / "round-2" / "model" / "alignctl.json").read_text())
        assert dpo2["parent_model"] == str(ref / "round-1" / "model")
        assert dpo2["config"]["ref_model"]["value"] == str(tiny_lm)
        partial = ref_dir.parent / "killed" / "it" / "round-2" / "rm.partial"
    else:
        assert not (ref / "round-1" / "candidates.jsonl").exists()  # online DPO samples its own
        assert (first["trainer"], second["trainer"]) == ("online-dpo", "online-dpo")
        od2 = json.loads((ref / "round-2" / "model" / "alignctl.json").read_text())
        assert od2["stage"] == "online-dpo" and od2["parent_model"] == str(ref / "round-1" / "model")
        assert not _same_weights(ref / "round-2" / "model", ref / "round-1" / "model")
        partial = killed_dir / "it" / "round-2" / "model.partial"

    cmd = _cmd(case, killed_dir, tiny_lm, tiny_rm)
    proc = subprocess.Popen(cmd, env=_env(killed_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial.exists(), f"the kill did not land in round 2 ({partial.name})"
    again = subprocess.run(cmd, env=_env(killed_dir), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    out = killed_dir / "it"
    assert _tree(out) == _tree(ref)
    for n in (1, 2):
        assert _same_weights(out / f"round-{n}" / "model", ref / f"round-{n}" / "model"), n
    if case == "retrain-rm":
        assert _same_weights(out / "round-2" / "rm", ref / "round-2" / "rm")
        for name in ("prefs.jsonl", "train.jsonl"):  # the same pairs and scores (paths and manifests aside)
            a, b = ([_pair(x) for x in (d / "round-2" / name).read_text().splitlines()] for d in (out, ref))
            assert a == b, name
    rows = [json.loads((d / "round-2" / "eval.json").read_text())["win_rate"] for d in (out, ref)]
    assert rows[0] == rows[1]


@pytest.mark.parametrize(
    ("sets", "by", "message"),
    [
        (["trainer=ppo"], BY, "trainer must be one of dpo, kto, .*online-dpo, got 'ppo'"),
        (["reference=first"], BY, "reference must be previous or initial"),
        (["trainer=kto", "reference=initial"], BY, "reference=initial needs trainer=dpo"),
        (["trainer=online-dpo", "retrain_rm=true"], BY, "retrain_rm needs pairs"),
        (["trainer=online-dpo", "sft_first=true"], BY, "sft_first needs pairs"),
        (["sft_first=true", "sft_set=[lerning_rate=1]"], BY, "unknown key 'lerning_rate' for sft"),
        (["retrain_rm=true"], BY, "--retrain-rm: --by must be the reward model"),
        (["trainer=online-dpo"], "human", "online-dpo labels its own samples"),
    ],
)
def test_bad_combinations_fail_before_any_work(tmp_path, tiny_lm, sets, by, message):
    from alignctl.errors import InputError
    from alignctl.stages import iterate, resolve

    train, held = _data(tmp_path)
    with pytest.raises(InputError, match=message):
        iterate.plan(resolve("iterate", sets=sets), train, str(tiny_lm), by, tmp_path / "it", held)
    assert not (tmp_path / "it").exists()


def test_one_round_of_kto_trains_on_the_pairs_as_good_and_bad_answers(tmp_path, tiny_lm):
    from alignctl import io
    from alignctl.stages import iterate, resolve

    train, held = _data(tmp_path)
    sets = [*BASE, "rounds=1", "trainer=kto", f"dpo_set={TRAIN}"]
    out = iterate.run(resolve("iterate", sets=sets), train, str(tiny_lm), BY, tmp_path / "it", eval_prompts=held)
    pairs = io.load(out / "round-1" / "train.jsonl", "preferences")
    unpaired = [json.loads(x) for x in (out / "round-1" / "train.kto.jsonl").read_text().splitlines()]
    assert len(unpaired) == 2 * len(pairs) and [u["label"] for u in unpaired[:2]] == [True, False]
    assert json.loads((out / "round-1" / "model" / "alignctl.json").read_text())["stage"] == "kto"
    assert not _same_weights(out / "round-1" / "model", tiny_lm)


def test_sft_first_fine_tunes_on_the_rounds_chosen_answers_then_trains_from_there(tmp_path, tiny_lm):
    """Llama 3's round: the round's chosen answers as SFT data (round-1/sft), and DPO starts from
    that model (its reference too: the round's starting point is the fine-tuned model)."""
    from alignctl import io
    from alignctl.stages import iterate, resolve

    train, held = _data(tmp_path)
    sft_set = "sft_set=[max_steps=2, learning_rate=1e-3, logging_steps=1, save_steps=0, use_peft=false]"
    sets = [*BASE, "rounds=1", "sft_first=true", sft_set]
    out = iterate.run(resolve("iterate", sets=sets), train, str(tiny_lm), BY, tmp_path / "it", eval_prompts=held)
    r1 = out / "round-1"
    pairs = io.load(r1 / "prefs.jsonl", "preferences")
    tuned = json.loads((r1 / "sft" / "alignctl.json").read_text())
    assert tuned["stage"] == "sft" and tuned["records"]["chosen_answers"] == len(pairs) > 0
    assert tuned["parent_model"] == str(tiny_lm) and not _same_weights(r1 / "sft", tiny_lm)
    trained = json.loads((r1 / "model" / "alignctl.json").read_text())
    assert trained["stage"] == "dpo" and trained["parent_model"] == str(r1 / "sft")
    entry = json.loads((out / "alignctl.json").read_text())["rounds"][0]
    assert entry["sft"] == str(r1 / "sft") and entry["policy"] == str(tiny_lm)


def test_by_human_stops_the_round_for_labelling_and_the_rerun_continues(tmp_path, tiny_lm):
    """Two prompts, two rounds: one best/worst screen per prompt. Quit after round 1's first screen:
    the run stops (exit 1) with the choice saved; the rerun starts at screen 2 of round 1, trains,
    and asks round 2's screens."""
    pexpect = pytest.importorskip("pexpect")
    from tiny import write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "What is the sky?"}, {"prompt": "Who is the cat?"}])
    held = write_jsonl(tmp_path / "held.jsonl", [{"prompt": "Is the sun good?"}])
    sets = [*BASE, "num_samples=3", "label_set=[human_mode=best-worst]", f"eval_by={BY}"]
    argv = ["-m", "alignctl", "iterate", "-p", str(train), "--eval-prompts", str(held), "-m", str(tiny_lm)]
    argv += ["--by", "human", "-o", str(tmp_path / "it"), *(x for s in sets for x in ("--set", s))]

    def spawn():
        return pexpect.spawn(sys.executable, argv, env=_env(tmp_path), encoding="utf-8", timeout=300,
                             dimensions=(50, 200))  # fmt: skip

    child = spawn()
    child.expect("round 1/2: label")
    child.expect("screen 1 of 2")
    child.send("1")
    child.expect("the worst")
    child.send("2")
    child.expect("screen 2 of 2")
    child.send("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1 and "rerun the same command to continue" in child.before
    assert not (tmp_path / "it" / "round-1" / "prefs.jsonl").exists()

    child = spawn()
    child.expect("screen 2 of 2")
    child.send("3")
    child.expect("the worst")
    child.send("1")
    child.expect("round 1/2: dpo")
    for screen in (1, 2):
        child.expect(f"screen {screen} of 2")
        child.send("2")
        child.expect("the worst")
        child.send("3")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before[-2000:]
    manifest = json.loads((tmp_path / "it" / "alignctl.json").read_text())
    assert manifest["complete"] and [e["pairs"] for e in manifest["rounds"]] == [2, 2]
    rows = [json.loads(x) for x in (tmp_path / "it" / "round-1" / "prefs.jsonl").read_text().splitlines()]
    got = [(r["label"]["kind"], r["label"]["chosen_index"], r["label"]["rejected_index"]) for r in rows]
    assert got == [("human", 0, 1), ("human", 2, 0)]
