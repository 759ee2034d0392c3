"""The judge over HTTP (src/alignctl/rewards/judge.py): the OpenAI-compatible client against a
local fake server (keys, retries, errors), and requests kept in flight."""

from __future__ import annotations

import json
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from alignctl.errors import AlignctlError, InputError
from alignctl.rewards.judge import (
    OpenAIChatClient,
    PairwiseJudge,
)

KEY = "sk-test-5ecret-4f9a1c"
KEY_ENV = "ALIGNCTL_TEST_JUDGE_KEY"


# --------------------------------------------------------------------------- OpenAI-compatible client


class FakeServer:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that records requests.

    `replies` is a queue of (status, body) pairs; once it runs out every request gets "A".
    Header names are recorded in lower case. `delay` holds each answer back that many seconds;
    `peak` is the most requests in flight at once.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.replies: list[tuple[int, Any]] = []
        self.delay = 0.0
        self.in_flight = self.peak = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with lock:
                    body = json.loads(self.rfile.read(length))
                    server.requests.append({"path": self.path, "headers": headers, "body": body})
                    server.in_flight += 1
                    server.peak = max(server.peak, server.in_flight)
                time.sleep(server.delay)
                with lock:
                    server.in_flight -= 1
                status, body = server.replies.pop(0) if server.replies else (200, _completion("A"))
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.closed = False
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.httpd.shutdown()
            self.httpd.server_close()


def _completion(text: str) -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
    }


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    yield srv
    srv.close()


@pytest.fixture
def client(server, monkeypatch) -> OpenAIChatClient:
    monkeypatch.setenv(KEY_ENV, KEY)
    return OpenAIChatClient(server.base_url + "/", "judge-model", api_key_env=KEY_ENV, timeout=5)


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY not in text


def test_client_posts_chat_completion_with_bearer_key(server, client):
    assert client([{"role": "user", "content": "Which? A or B"}]) == "A"
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    assert request["body"]["model"] == "judge-model"
    assert request["body"]["temperature"] == 0 and request["body"]["max_tokens"] == 16
    assert request["body"]["messages"] == [{"role": "user", "content": "Which? A or B"}]


def test_key_is_read_at_call_time_and_never_kept(server, client, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-rotated")
    client([{"role": "user", "content": "x"}])
    assert server.requests[-1]["headers"]["authorization"] == "Bearer sk-rotated"
    monkeypatch.delenv(KEY_ENV)
    client([{"role": "user", "content": "x"}])
    assert "authorization" not in server.requests[-1]["headers"]  # a local vLLM server needs no key


def test_key_never_in_describe_repr_or_pickle(client):
    client([{"role": "user", "content": "x"}])
    info = client.describe()
    assert info == {
        "kind": "openai",
        "url": client.url,
        "model": "judge-model",
        "api_key_env": KEY_ENV,
        "max_tokens": 16,
        "temperature": 0,
    }
    assert_no_key(json.dumps(info), repr(client), str(vars(client)), pickle.dumps(client).decode("latin-1"))
    assert_no_key(json.dumps(PairwiseJudge(client).describe()))


def test_http_error_names_status_and_url_not_key(server, client):
    # Some providers echo (part of) the key back; the message must not carry it.
    server.replies.append((401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}))
    with pytest.raises(AlignctlError) as info:
        client([{"role": "user", "content": "x"}])
    message = str(info.value)
    assert "HTTP 401" in message and client.url in message and KEY_ENV in message
    assert_no_key(message, repr(info.value), str(info.value.__cause__), str(info.value.__context__))
    assert len(server.requests) == 1  # a 401 is not retried


def test_server_errors_are_retried(server, client):
    server.replies += [(500, {"error": "busy"}), (429, {"error": "slow down"}), (200, _completion("B"))]
    assert client([{"role": "user", "content": "x"}]) == "B"
    assert len(server.requests) == 3


def test_retries_run_out(server, client):
    server.replies += [(503, {"error": KEY})] * 4
    with pytest.raises(AlignctlError, match=r"chat/completions: HTTP 503 after 3 retries") as info:
        client([{"role": "user", "content": "x"}])
    assert_no_key(str(info.value))
    assert len(server.requests) == 4


def test_unreachable_and_malformed(server, client, monkeypatch):
    server.replies.append((200, "not json"))
    with pytest.raises(AlignctlError, match="unexpected response from .*chat/completions"):
        client([{"role": "user", "content": "x"}])
    port = server.httpd.server_address[1]
    server.close()
    dead = OpenAIChatClient(f"http://127.0.0.1:{port}/v1", "m", api_key_env=KEY_ENV, max_retries=1)
    where = f"127.0.0.1:{port}/v1/chat/completions"
    with pytest.raises(AlignctlError, match=f"{where}: cannot connect after 1 retries") as info:
        dead([{"role": "user", "content": "x"}])
    assert_no_key(str(info.value))


def test_bad_url_is_input_error():
    with pytest.raises(InputError, match="must start with http"):
        OpenAIChatClient("localhost:8000/v1", "m")


def test_judge_over_http_end_to_end(server, client):
    # Prefer B in the first order and A in the second: both point at answer 2.
    server.replies += [(200, _completion("B")), (200, _completion("Answer A"))]
    client.max_concurrency = 1  # the replies above are queued in the order the questions are asked
    verdict = PairwiseJudge(client).judge("What is the capital of France?", "Lyon", "Paris")
    assert verdict.winner == 1 and verdict.orders == ["B", "A"]
    first, second = (r["body"]["messages"][-1]["content"] for r in server.requests)
    assert "Answer A:\nLyon" in first and "Answer A:\nParis" in second


def test_an_endpoint_judge_keeps_requests_in_flight():
    import threading
    import time

    from alignctl.rewards.judge import PairwiseJudge

    class SlowEndpoint:
        max_concurrency = 4

        def __init__(self):
            self.now = self.most = 0
            self.lock = threading.Lock()

        def __call__(self, messages):
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            time.sleep(0.05)
            with self.lock:
                self.now -= 1
            return "A" if "good" in messages[-1]["content"].split("Answer B:")[0] else "B"

    endpoint = SlowEndpoint()
    verdicts = PairwiseJudge(endpoint).judge_pairs("Q?", [("good", "bad"), ("bad", "good"), ("good", "meh")])
    assert [v.winner for v in verdicts] == [0, 1, 0]
    assert 1 < endpoint.most <= 4


def test_endpoint_requests_run_concurrently_across_prompts(server, client):
    # 12 pairs of 3 prompts = 24 questions; at 0.2 s each they take ~4.8 s one at a time.
    server.delay = 0.2
    client.max_concurrency = 8
    start = time.perf_counter()
    verdicts = PairwiseJudge(client).judge_many(["q1", "q2", "q3"] * 4, [("a", "b")] * 12)
    seconds = time.perf_counter() - start
    assert len(server.requests) == 24 and server.peak == 8
    assert seconds < 2.4, seconds  # 24 / 8 rounds of 0.2 s, plus overhead
    assert all(v.reason == "disagree" for v in verdicts)  # "A" to both orders: position bias, a tie


def test_endpoint_judge_without_the_openai_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # as if not installed
    with pytest.raises(InputError, match="a judge endpoint: the openai client is not installed") as info:
        OpenAIChatClient("http://127.0.0.1:1/v1", "m")
    assert "alignctl[openai]" in str(info.value.hint)
