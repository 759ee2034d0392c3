"""`alignctl collect` and the generation package on the tiny model: sampling math, seeds, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types

import pytest

from conftest import run_cli
from tiny import write_jsonl

# Tiny models run fastest on one thread, and on a shared, loaded machine two OpenMP threads spin
# against each other (measured: 1.7 ms vs 59 ms per decode step at load 9 on 2 cores).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PROMPTS = [
    {"prompt": "Is the sky blue?", "answer": "yes"},
    {"prompt": [{"role": "user", "content": "What is the capital of france?"}], "answer": "paris"},
    {"id": "p3", "prompt": "hello world"},
]


def test_filter_logits_by_hand():
    """logits [2, 1, 0, -1], T=1: softmax = [.644, .237, .087, .032].

    top_k=2 keeps {0, 1}; top_p=0.7 keeps {0, 1} (mass above token 1 is .644 < .7, above token 2
    is .881 >= .7); top_p=0.5 keeps only token 0; T=2 halves the logits.
    """
    import torch

    from alignctl.generation import filter_logits

    x = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    inf = float("-inf")
    assert filter_logits(x, 1.0, top_k=2).tolist() == [[2.0, 1.0, inf, inf]]
    assert filter_logits(x, 1.0, top_p=0.7).tolist() == [[2.0, 1.0, inf, inf]]
    assert filter_logits(x, 1.0, top_p=0.5).tolist() == [[2.0, inf, inf, inf]]
    assert filter_logits(x, 2.0).tolist() == [[1.0, 0.5, 0.0, -0.5]]
    assert filter_logits(x, 1.0, top_k=0, top_p=1.0).tolist() == x.tolist()


def test_params_report_every_problem():
    from alignctl.errors import InputError
    from alignctl.generation import SamplingParams

    with pytest.raises(InputError) as err:
        SamplingParams(temperature=-1, top_p=0, max_new_tokens=0).check()
    msg = str(err.value)
    assert "temperature" in msg and "top_p" in msg and "max_new_tokens" in msg


def test_generate_is_seeded_per_prompt_not_per_batch(tiny_lm):
    """Each completion's random stream hangs on (seed, prompt id, sample): batch size and the
    neighbours in a batch do not change what a prompt gets; another seed does."""
    from alignctl.generation import HFBackend, SamplingParams, generate

    backend = HFBackend(str(tiny_lm))
    prompts = [p["prompt"] for p in PROMPTS]
    params = SamplingParams(max_new_tokens=10, batch_size=6)
    a = generate(backend, prompts, 2, params)
    assert len(a) == 3 and all(len(x) == 2 for x in a)
    assert a[0][0] != a[0][1]  # two samples of one prompt differ
    assert generate(backend, prompts, 2, SamplingParams(max_new_tokens=10, batch_size=1)) == a
    assert generate(backend, prompts[::-1], 2, params) == a[::-1]
    assert generate(backend, prompts[:1], 2, params) == a[:1]
    assert generate(backend, prompts, 2, SamplingParams(max_new_tokens=10, seed=1)) != a
    greedy = SamplingParams(temperature=0, max_new_tokens=6)
    assert generate(backend, prompts, 1, greedy) == generate(backend, prompts, 1, greedy)


def test_rows_leaving_at_eos_give_what_generate_gives(tiny_lm):
    """The decode loop drops rows from the batch and KV cache at EOS; transformers `generate` (the
    fallback) keeps them. Same completions either way. Half the vocabulary counts as EOS here so
    rows stop at many different steps."""
    from alignctl.generation import HFBackend, SamplingParams, generate

    ours, theirs = HFBackend(str(tiny_lm)), HFBackend(str(tiny_lm), prune=False)
    for b in (ours, theirs):
        b.eos_ids = set(range(0, len(b.tokenizer), 2))
    prompts = [p["prompt"] for p in PROMPTS]
    for params in (
        SamplingParams(max_new_tokens=12),
        SamplingParams(temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=12),
    ):
        a, b = generate(ours, prompts, 3, params), generate(theirs, prompts, 3, params)
        assert a == b
        assert len({len(x) for row in a for x in row}) > 2  # rows really did stop at different lengths


def test_collect_writes_candidates_and_is_up_to_date_on_rerun(tmp_path, tiny_lm, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a machine without vLLM (make vllm-cpu installs it)
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "cand.jsonl"
    args = ["collect", "-p", tmp_path / "prompts.jsonl", "-m", tiny_lm, "-n", "2", "--max-new-tokens", "6", "-o", out]
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    assert "backend: hf" in stderr and "vllm not installed" in stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    from alignctl import io

    assert [r["id"] for r in recs] == [io.prompt_id(PROMPTS[0]["prompt"]), io.prompt_id(PROMPTS[1]["prompt"]), "p3"]
    assert recs[0]["answer"] == "yes" and "answer" not in recs[2]  # extra columns carried through
    assert all(isinstance(c, str) for c in recs[0]["completions"])
    assert all(c[0]["role"] == "assistant" for c in recs[1]["completions"])  # message prompt -> messages
    gen = recs[0]["generator"]
    assert gen == {
        "model": str(tiny_lm),
        "backend": "hf",
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "max_new_tokens": 6,
        "seed": 42,
        "chat_template": True,
    }
    assert len(io.load(out, "candidates")) == 3
    manifest = json.loads((tmp_path / "cand.jsonl.alignctl.json").read_text())
    assert manifest["stage"] == "collect" and manifest["final_metrics"]["completions"] == 6
    assert not (tmp_path / "cand.jsonl.partial").exists()

    stamp = out.stat().st_mtime_ns
    code, _, stderr = cli(*args)
    assert code == 0 and "up to date" in stderr and out.stat().st_mtime_ns == stamp
    code, _, stderr = cli(*args, "--seed", "3")
    assert code == 2 and "already exists (a different run)" in stderr and out.stat().st_mtime_ns == stamp


def test_collect_killed_then_rerun_equals_uninterrupted_run(tmp_path, tiny_lm, cli):
    """SIGKILL part-way, rerun: same ids, same completions, byte for byte, as a run never stopped."""
    prompts = [{"prompt": f"Is {w} {c}?"} for w in ("paris", "rome", "tokyo", "the sky") for c in ("red", "big", "hot")]
    write_jsonl(tmp_path / "prompts.jsonl", prompts)
    args = ["collect", "-p", "prompts.jsonl", "-m", str(tiny_lm), "-n", "2", "--max-new-tokens", "32"]
    args += ["--batch-size", "2", "--seed", "7"]
    with pytest.MonkeyPatch.context() as mp:  # the uninterrupted run, in-process to save a start-up
        mp.chdir(tmp_path)
        code, _, err = cli(*args, "-o", "whole.jsonl")
    assert code == 0, err

    out, journal = tmp_path / "cut.jsonl", tmp_path / "cut.jsonl.partial"
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignctl", *args, "-o", "cut.jsonl"],
        cwd=tmp_path,
        env={**os.environ, **ONE_THREAD},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 4:  # header + 3 prompts
            break
        assert proc.poll() is None, "collect finished before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    kept = [json.loads(x) for x in journal.read_text().splitlines()[1:]]
    assert 3 <= len(kept) < len(prompts)

    rerun = run_cli(*args, "-o", "cut.jsonl", cwd=tmp_path, env=ONE_THREAD)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming" in rerun.stderr and "already generated" in rerun.stderr
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert not journal.exists()


def test_malformed_prompts_name_the_line_and_write_nothing(tmp_path, tiny_lm, cli):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": ""}\n', encoding="utf-8")
    code, _, err = cli("collect", "-p", bad, "-m", tiny_lm, "-o", tmp_path / "c.jsonl")
    assert code == 2 and f"{bad}:2:" in err and "empty string" in err
    bad.write_text('{"prompt": "fine"}\n{"prompt": "cut\n', encoding="utf-8")
    code, _, err = cli("collect", "-p", bad, "-m", tiny_lm, "-o", tmp_path / "c.jsonl")
    assert code == 2 and f"{bad}:2: invalid JSON" in err
    code, _, err = cli("collect", "-p", bad, "-m", tiny_lm, "--top-p", "0", "-n", "0", "-o", tmp_path / "c.jsonl")
    assert code == 2 and "top_p" in err and "num_samples" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl"]


def _fake_vllm(tokenizer_dir):
    """A stand-in `vllm` module: records what collect asks for and answers deterministically."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    calls = []

    class LLM:
        def __init__(self, model, **kwargs):
            calls.append(("init", model, kwargs))
            self.tok = AutoTokenizer.from_pretrained(tokenizer_dir)

        def get_tokenizer(self):
            return self.tok

        def generate(self, requests, sampling, use_tqdm=True):
            calls.append(("generate", len(requests), use_tqdm))
            return [
                SimpleNamespace(
                    outputs=[
                        SimpleNamespace(
                            text=f" answer {k} of {sp.seed % 97}", token_ids=[5] * (k + 2), finish_reason="stop"
                        )
                        for k in range(sp.n)
                    ]
                )
                for req, sp in zip(requests, sampling, strict=True)
            ]

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    return module, calls


def test_vllm_backend_through_a_stand_in_module(tmp_path, tiny_lm, cli, monkeypatch):
    """--backend vllm drives vLLM's offline API (prompt token ids, n, per-prompt seed, top_k -1 = off)."""
    module, calls = _fake_vllm(tiny_lm)
    monkeypatch.setitem(sys.modules, "vllm", module)
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "c.jsonl"
    code, _, err = cli("collect", "-p", tmp_path / "prompts.jsonl", "-m", tiny_lm, "--backend", "vllm", "-o", out)
    assert code == 0, err
    assert "backend: vllm" in err and "asked for" in err
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert recs[0]["generator"]["backend"] == "vllm"
    assert recs[0]["completions"][0].startswith("answer 0 of ")  # chat output is stripped
    assert recs[1]["completions"][1][0]["content"].startswith("answer 1 of ")
    init = calls[0]
    assert init[0] == "init" and init[2]["enforce_eager"] is True  # CPU: the vllm-cpu settings
    assert calls[1] == ("generate", 3, False)
    # auto picks vllm only with a CUDA device; here it says why it did not
    auto = ["-n", "1", "--max-new-tokens", "2", "-o", tmp_path / "auto.jsonl"]
    code, _, err = cli("collect", "-p", tmp_path / "prompts.jsonl", "-m", tiny_lm, *auto)
    assert code == 0 and "backend: hf" in err and "no CUDA device" in err


def test_vllm_asked_for_but_missing(tmp_path, tiny_lm, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    code, _, err = cli(
        "collect", "-p", tmp_path / "prompts.jsonl", "-m", tiny_lm, "--backend", "vllm", "-o", tmp_path / "c"
    )
    assert code == 2 and "vllm is not installed" in err
