"""A small OpenAI-compatible server on 127.0.0.1 for the `--backend openai` tests: deterministic
answers (a function of the prompt and the request's seed), and knobs for the failures a client
must survive (the first K requests answered 503, a delay per request); it records what it saw."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(self, *, fail_first: int = 0, delay: float = 0.0, model: str = "fake-model") -> None:
        self.fail_first, self.delay, self.model = fail_first, delay, model
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": outer.model, "object": "model", "created": 0}]})
                else:
                    self._send(404, {"error": {"message": "no such route"}})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.requests.append(body)
                    outer.auth.append(self.headers.get("Authorization", ""))
                    failing = len(outer.requests) <= outer.fail_first
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    time.sleep(outer.delay)
                    if failing:
                        self._send(503, {"error": {"message": "overloaded, try again"}})
                        return
                    if body.get("model") != outer.model:
                        self._send(404, {"error": {"message": f"model {body.get('model')} does not exist"}})
                        return
                    self._send(200, outer.answer(self.path, body))
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

            def _send(self, code: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, path: str, body: dict) -> dict:
        prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        words = ["ok"] + [f"w{(body.get('seed') or 0) % 97}"] * (1 + len(prompt) % 3)
        text = " ".join(words)[: 4 * body.get("max_tokens", 16)]
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(words), "total_tokens": 0}
        if "messages" in body:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            kind = "chat.completion"
        else:
            choice, kind = {"index": 0, "text": " " + text, "finish_reason": "length"}, "text_completion"
        return {"id": "x", "object": kind, "created": 0, "model": self.model, "choices": [choice], "usage": usage}

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
