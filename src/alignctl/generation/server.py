"""The `openai` backend: any OpenAI-compatible server (`vllm serve`, SGLang, TGI, llama.cpp's
server, a hosted API) through the maintained `openai` client (an optional extra).

One request per completion (prompt, sample index), seeded with the same per-row seed the `hf`
backend uses, `max_concurrency` of them in flight on a thread pool. Message prompts, and plain
prompts unless `--no-chat-template`, go to `/chat/completions` (the server applies the model's
chat template); `--no-chat-template` sends plain prompts as raw text to `/completions`.

The client retries connection errors, timeouts, 408/409/429 and 5xx answers with exponential
backoff (`max_retries`, `request_timeout`); when they are spent, one line names the URL and what
went wrong. The API key is read from the environment variable `api_key_env` names and is never
written to a manifest, a journal or a log line (a server that echoes it back is redacted).
Whether the same seed gives the same text on rerun is the server's promise: vLLM keeps it per
request when requests are computed alike, i.e. one in flight (the tests check it against `vllm
serve`); with several in flight its batches follow arrival timing, and hosted APIs call it best effort.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from alignctl.errors import AlignctlError, InputError
from alignctl.generation.sampling import Generation, Item, SamplingParams, row_seed

DEFAULT_KEY_ENV = "OPENAI_API_KEY"


def openai_installed() -> bool:
    if "openai" in sys.modules:
        return sys.modules["openai"] is not None
    return importlib.util.find_spec("openai") is not None


def require_openai(what: str = "--backend openai") -> None:
    """One line naming what to install, before any model or server is touched."""
    if not openai_installed():
        raise InputError(f"{what}: the openai client is not installed", hint="pip install 'alignctl[openai]'")


def base_url_of(resolved_url: str | None, what: str = "--backend openai") -> str:
    url = resolved_url or os.environ.get("OPENAI_BASE_URL")
    if not url:
        raise InputError(f"{what}: no server given: --base-url URL (e.g. http://127.0.0.1:8000/v1) or $OPENAI_BASE_URL")
    return url.rstrip("/")


def openai_client(base_url: str, api_key: str, timeout: float, max_retries: int):
    """The maintained client: connection pooling (thread-safe, so requests run concurrently),
    timeouts, and retries with exponential backoff and jitter (honouring Retry-After) of
    connection errors, timeouts, 408/409/429 and 5xx answers."""
    import openai

    return openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)


def failure(exc: Exception, max_retries: int, model: str | None, redact: Callable[[str], str]) -> str:
    """What went wrong with a request, in a few words, once the client's retries are spent."""
    import openai

    tries = f"after {max_retries} retries" if max_retries else "(no retries)"
    if isinstance(exc, openai.APITimeoutError):
        return f"no answer within the timeout {tries}"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot connect {tries}"
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        retried = f" {tries}" if code in (408, 409, 429) or code >= 500 else ""
        body = redact(str(getattr(exc, "message", exc)))[:200]
        return f"HTTP {code}{retried} for model {model!r}: {body}"
    return f"{type(exc).__name__}: {redact(str(exc))[:200]}"


class ServerError(AlignctlError):
    """A server that stayed down, slow or failing after the client's retries (exit 1)."""


class OpenAIBackend:
    """Completions from an OpenAI-compatible server, many requests in flight."""

    name = "openai"
    independent_rows = True  # one request per completion, seeded by row: no batch shapes to keep

    def __init__(
        self,
        base_url: str,
        model: str | None,
        *,
        api_key_env: str = DEFAULT_KEY_ENV,
        chat_template: bool | None = None,
        max_concurrency: int = 16,
        request_timeout: float = 120.0,
        max_retries: int = 4,
    ) -> None:
        require_openai()
        self.base_url = base_url.rstrip("/")
        self._key = os.environ.get(api_key_env) or "EMPTY"  # local servers without --api-key take anything
        self.chat_template = chat_template
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_retries = max_retries
        self.client = openai_client(self.base_url, self._key, request_timeout, max_retries)
        self.model = model or self._first_model()

    # --- errors -----------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key and self._key != "EMPTY" else text

    def _fail(self, exc: Exception) -> ServerError:
        return ServerError(f"{self.base_url}: {failure(exc, self.max_retries, self.model, self._redact)}")

    def _first_model(self) -> str:
        """The model a single-model server (vllm serve) serves, when --model was not given."""
        try:
            models = [m.id for m in self.client.models.list()]
        except Exception as exc:  # the client's many error types all become one line
            self.model = "?"
            raise self._fail(exc) from exc
        if not models:
            raise ServerError(f"{self.base_url}: the server lists no models; give --model NAME")
        return models[0]

    # --- the backend interface -------------------------------------------------------------------

    def uses_template(self, prompt: str | list[dict]) -> bool:
        return isinstance(prompt, list) or self.chat_template is not False

    def plan(self, items: Sequence[Item], n: int, params: SamplingParams) -> list[list[int]]:
        """Chunks big enough to keep every request slot busy; each chunk's results are journalled."""
        per_batch = max(1, max(params.batch_size, 4 * self.max_concurrency) // n)
        return [list(range(i, min(i + per_batch, len(items)))) for i in range(0, len(items), per_batch)]

    def complete(self, item: Item, sample: int, params: SamplingParams) -> tuple[str, int, bool]:
        """(text, generated tokens, ended at EOS) of one completion."""
        common: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": row_seed(params.seed, item.id, sample),
        }
        if params.top_k > 0:  # not in OpenAI's API; vLLM, SGLang and llama.cpp read it from the body
            common["extra_body"] = {"top_k": params.top_k}
        try:
            if self.uses_template(item.prompt):
                messages = item.prompt if isinstance(item.prompt, list) else [{"role": "user", "content": item.prompt}]
                reply = self.client.chat.completions.create(messages=messages, **common)
                choice = reply.choices[0]
                text = (choice.message.content or "").strip()
            else:
                reply = self.client.completions.create(prompt=item.prompt, **common)
                choice = reply.choices[0]
                text = choice.text
        except Exception as exc:
            raise self._fail(exc) from exc
        tokens = reply.usage.completion_tokens if reply.usage is not None else len(text.split())
        return text, int(tokens), choice.finish_reason == "stop"

    def generate_batch(
        self, items: Sequence[Item], n: int, params: SamplingParams, on_step: Callable | None = None
    ) -> list[Generation]:
        from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

        slots: dict[tuple[int, int], tuple[str, int, bool]] = {}
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="alignctl-openai")
        try:
            futures = {
                pool.submit(self.complete, it, j, params): (i, j) for i, it in enumerate(items) for j in range(n)
            }
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in finished:
                    slots[futures[fut]] = fut.result()  # re-raises the first ServerError
                    if on_step is not None:
                        on_step(slots[futures[fut]][1])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        out = []
        for i, it in enumerate(items):
            rows = [slots[(i, j)] for j in range(n)]
            out.append(Generation(it.id, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]))
        return out

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.base_url, "model": self.model}


SERVER_KEYS = ("base_url", "api_key_env", "max_concurrency", "request_timeout", "max_retries")


def server_options(resolved) -> dict[str, Any]:
    """The `ServerSettings` values of a stage's resolved settings."""
    return {k: resolved[k] for k in SERVER_KEYS}


def server_fingerprint(base_url: str, model: str | None) -> dict[str, Any]:
    """What identifies generations from a server: its URL and model name (never the key)."""
    return {"server": base_url, "model": model}
