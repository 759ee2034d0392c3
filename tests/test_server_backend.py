"""`--backend openai`: collect and eval through an OpenAI-compatible server (fake_openai.py here; a
real `vllm serve` in test_vllm_real.py): record contract, seeds, requests in flight, retries,
one line naming the URL when the server stays down or slow, resume after a kill, key never written."""

from __future__ import annotations

import json
import secrets
import signal
import socket
import sys

import pytest

from fake_openai import FakeOpenAI
from tiny import write_jsonl

KEY_ENV = "ALIGNCTL_TEST_SERVER_KEY"


def _prompts(tmp_path, n=6):
    recs = [{"prompt": f"Question number {i}?", "answer": str(i)} for i in range(n - 1)]
    recs.append({"prompt": [{"role": "user", "content": "A message prompt?"}]})
    return write_jsonl(tmp_path / "prompts.jsonl", recs)


def _collect(cli, tmp_path, url, *extra, out="c.jsonl"):
    return cli("collect", "-p", _prompts(tmp_path), "--backend", "openai", "--base-url", url, "-n", "3",
               "--max-new-tokens", "8", "-o", tmp_path / out, *extra)  # fmt: skip


def test_collect_through_a_server(tmp_path, cli, monkeypatch):
    key = "sk-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with FakeOpenAI(delay=0.05) as server:
        code, out, err = _collect(cli, tmp_path, server.url, "--max-concurrency", "4")
        assert code == 0, err
        assert "backend: openai" in err and server.url in err and "fake-model" in err
        recs = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
        assert len(recs) == 6 and all(len(r["completions"]) == 3 for r in recs)
        gen = recs[0]["generator"]
        assert gen["backend"] == "openai" and gen["model"] == "fake-model" and gen["server"] == server.url
        assert recs[0]["answer"] == "0"  # extra columns carried through
        assert recs[-1]["completions"][0][0]["role"] == "assistant"  # message prompts get message answers
        # one request per (prompt, sample), each with its own seed, several in flight
        assert len(server.requests) == 18 and len({r["seed"] for r in server.requests}) == 18
        assert server.max_in_flight > 1
        assert all(a == f"Bearer {key}" for a in server.auth)
        first = (tmp_path / "c.jsonl").read_text()
        # same seed, same server: same candidates (also with another number in flight)
        code, _, err = _collect(cli, tmp_path, server.url, "--max-concurrency", "1", out="again.jsonl")
        assert code == 0, err
        assert (tmp_path / "again.jsonl").read_text() == first
    written = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    assert key not in written and key not in out + err


def test_no_chat_template_uses_the_completions_route(tmp_path, cli):
    with FakeOpenAI() as server:
        code, _, err = _collect(cli, tmp_path, server.url, "--no-chat-template")
        assert code == 0, err
    routes = [("messages" in r) for r in server.requests]
    assert routes.count(False) == 15 and routes.count(True) == 3  # message prompts stay chat


def test_retries_then_succeeds(tmp_path, cli):
    with FakeOpenAI(fail_first=2) as server:
        code, _, err = _collect(cli, tmp_path, server.url, "--max-concurrency", "1", "--set", "max_retries=3")
        assert code == 0, err
        assert len(server.requests) == 18 + 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_one_line_naming_the_url(tmp_path, run):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    res = run("collect", "-p", _prompts(tmp_path), "--backend", "openai", "--base-url", url, "--model", "m",
              "--set", "max_retries=1", "-o", tmp_path / "c.jsonl")  # fmt: skip
    assert res.returncode == 1, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert any(url in ln and "cannot connect after 1 retries" in ln for ln in lines), res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "c.jsonl").exists()


def test_slow_server_times_out_with_one_line(tmp_path, cli):
    with FakeOpenAI(delay=1.5) as server:
        code, _, err = _collect(cli, tmp_path, server.url, "--model", "fake-model",
                                "--set", "request_timeout=0.3", "--set", "max_retries=1")  # fmt: skip
    assert code == 1 and server.url in err and "no answer within the timeout" in err, err


def test_an_unknown_model_is_one_line(tmp_path, cli):
    with FakeOpenAI() as server:
        code, _, err = _collect(cli, tmp_path, server.url, "--model", "nope")
    assert code == 1 and server.url in err and "HTTP 404" in err and "nope" in err, err


def test_killed_collect_resumes_without_losing_or_doubling(tmp_path, run, cli):
    with FakeOpenAI() as server:
        code, _, err = _collect(cli, tmp_path, server.url, out="whole.jsonl")
        assert code == 0, err
        args = ["collect", "-p", tmp_path / "prompts.jsonl", "--backend", "openai", "--base-url", server.url,
                "-n", "3", "--max-new-tokens", "8", "--max-concurrency", "2"]  # fmt: skip
        out = tmp_path / "c.jsonl"
        killed = run(*args, "-o", out, env={"ALIGNCTL_CRASH_AFTER_RECORDS": "3"})
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        before = len(server.requests)
        code, _, err = cli(*args, "-o", out)
        assert code == 0, err
        assert "already generated" in err
        assert len(server.requests) - before < 18  # the journalled prompts were not asked again
    assert out.read_text() == (tmp_path / "whole.jsonl").read_text()


def test_eval_through_a_server(tmp_path, cli):
    prompts = _prompts(tmp_path)
    with FakeOpenAI() as server:
        code, _, err = cli("eval", "--backend", "openai", "--base-url", server.url, "-m", "fake-model",
                           "-b", "fake-model", "-p", prompts, "--by", "rule:length", "-o", tmp_path / "ev")  # fmt: skip
        assert code == 0, err
        summary = json.loads((tmp_path / "ev" / "eval.json").read_text())
        assert summary["wins"] + summary["ties"] + summary["losses"] == 6
        assert len(server.requests) == 6  # same name on both sides: answered once
        code, _, err = cli("eval", "--backend", "openai", "--base-url", server.url, "-m", "fake-model",
                           "-p", prompts, "--by", "rule:length", "-o", tmp_path / "ev2")  # fmt: skip
    assert code == 2 and "--baseline" in err


def test_missing_openai_client_is_one_line_before_anything_loads(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)
    code, _, err = _collect(cli, tmp_path, "http://127.0.0.1:9/v1")
    assert code == 2 and "pip install 'alignctl[openai]'" in err, err
    assert not (tmp_path / "c.jsonl.partial").exists()


def test_no_base_url_is_one_line(tmp_path, cli, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    code, _, err = cli("collect", "-p", _prompts(tmp_path), "--backend", "openai", "-o", tmp_path / "c.jsonl")
    assert code == 2 and "--base-url" in err, err


@pytest.mark.parametrize("n_flight", [1, 4])
def test_requests_in_flight_are_bounded(tmp_path, cli, n_flight):
    with FakeOpenAI(delay=0.05) as server:
        code, _, err = _collect(cli, tmp_path, server.url, "--max-concurrency", str(n_flight))
        assert code == 0, err
    assert server.max_in_flight <= n_flight and (n_flight == 1 or server.max_in_flight > 1)


@pytest.mark.parametrize("package", ["openai", "vllm"])
def test_eval_says_a_missing_engine_package_before_loading_anything(tmp_path, cli, monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)
    code, _, err = cli("eval", "--backend", package, "--base-url", "http://127.0.0.1:9/v1", "-m", "x", "-b", "y",
                       "-p", _prompts(tmp_path), "--by", "rule:length", "-o", tmp_path / "ev")  # fmt: skip
    assert code == 2 and f"{package} " in err and "not installed" in err, err
    assert not (tmp_path / "ev").exists()
