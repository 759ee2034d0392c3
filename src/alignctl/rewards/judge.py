"""The pairwise LLM judge: which of two answers is better, asked in both orders.

TRL removed its judges module, so this one is alignctl's own (docs/design.md, "Judges are
ours"). It serves `label` (picking chosen/rejected among candidates), `online-dpo` and `eval`.

LLM judges favour whichever answer they see first (or second) regardless of content; asking
both orders, (1 as A, 2 as B) and (2 as A, 1 as B), and keeping only verdicts that agree turns
that position bias into ties instead of noise in the preference data (Zheng et al. 2023,
"Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", arXiv 2306.05685, section 3.3).

The judge talks to a model through one callable, `complete(messages) -> str`: either
`OpenAIChatClient` below (any OpenAI-compatible endpoint: a vLLM server, a hosted API) or a
local Hugging Face model wrapped by the caller. This module imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alignctl.errors import AlignctlError, InputError
from alignctl.io import has_cjk
from alignctl.rewards.judge_prompts import DEFAULT_TEMPLATE as DEFAULT_TEMPLATE
from alignctl.rewards.judge_prompts import DEFAULT_TEMPLATE_ZH as DEFAULT_TEMPLATE_ZH
from alignctl.rewards.judge_prompts import PLACEHOLDERS as PLACEHOLDERS
from alignctl.rewards.judge_prompts import TEMPLATES as TEMPLATES
from alignctl.rewards.judge_prompts import VERDICT_BY as VERDICT_BY
from alignctl.rewards.judge_prompts import check_template as check_template
from alignctl.rewards.judge_prompts import load_template as load_template
from alignctl.rewards.judge_prompts import parse_verdict as parse_verdict
from alignctl.rewards.judge_prompts import render as render
from alignctl.rewards.text import completion_text, prompt_text

Messages = list[dict[str, str]]
CompleteFn = Callable[[Messages], str]


@dataclass
class Verdict:
    """The outcome of judging one pair.

    `winner`: 0 (the first answer), 1 (the second) or None (a tie). `orders` holds the parsed
    letter of each order, `[first-as-A, second-as-A]`; `replies` the judge's raw text.
    `reason`: "agree", "disagree" (position bias: the letters point at different answers) or
    "unparsed" (a reply without a clear letter).
    """

    winner: int | None
    orders: list[str | None]
    replies: list[str] = field(default_factory=list)
    reason: str = "agree"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PairwiseJudge:
    """Ask `complete` which answer is better, in both orders; agreement wins, anything else ties."""

    def __init__(
        self,
        complete: CompleteFn,
        template: str = DEFAULT_TEMPLATE,
        *,
        system: str | None = None,
        verdict_by: str = "auto",
    ) -> None:
        self.complete = complete
        self.template = check_template(template)
        self.system = system
        if verdict_by not in VERDICT_BY:
            raise InputError(f"verdict_by must be one of {', '.join(VERDICT_BY)}, got {verdict_by!r}")
        # next-token scores answer "which letter"; a custom template may want reasoning first
        scorable = callable(getattr(complete, "letters", None))
        if verdict_by == "auto":
            verdict_by = "scores" if scorable and self.template == DEFAULT_TEMPLATE else "generate"
        if verdict_by == "scores" and not scorable:
            raise InputError("verdict_by=scores needs a local judge model (an endpoint returns text only)")
        self.verdict_by = verdict_by

    @classmethod
    def from_template_file(cls, complete: CompleteFn, path: str | Path, *, system: str | None = None) -> PairwiseJudge:
        return cls(complete, load_template(path), system=system)

    def _messages(self, prompt: str, answer_a: str, answer_b: str) -> Messages:
        messages: Messages = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        template = self.template
        if template == DEFAULT_TEMPLATE and has_cjk(prompt):  # a Chinese question: ask in Chinese
            template = DEFAULT_TEMPLATE_ZH
        messages.append({"role": "user", "content": render(template, prompt, answer_a, answer_b)})
        return messages

    def _ask(self, messages: Messages) -> str:
        reply = self.complete(messages)
        if not isinstance(reply, str):
            raise AlignctlError(f"judge client returned {type(reply).__name__}, expected text")
        return reply

    def _replies(self, conversations: list[Messages]) -> list[str]:
        """One reply (or letter) per conversation: the letters' scores in one batch, a batched
        local generation, or an endpoint's requests `max_concurrency` at a time."""
        if self.verdict_by == "scores":
            return list(self.complete.letters(conversations))  # type: ignore[attr-defined]
        many = getattr(self.complete, "complete_many", None)
        if callable(many):
            return [self._check(r) for r in many(conversations)]
        workers = max(1, int(getattr(self.complete, "max_concurrency", 1)))
        if workers == 1 or len(conversations) == 1:
            return [self._ask(c) for c in conversations]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(workers, len(conversations))) as pool:
            return list(pool.map(self._ask, conversations))

    @staticmethod
    def _check(reply: Any) -> str:
        if not isinstance(reply, str):
            raise AlignctlError(f"judge client returned {type(reply).__name__}, expected text")
        return reply

    def judge(self, prompt: Any, answer_1: Any, answer_2: Any) -> Verdict:
        """Compare two answers to `prompt` (strings or message lists)."""
        return self.judge_pairs(prompt, [(answer_1, answer_2)])[0]

    @property
    def window(self) -> int:
        """Pairs asked together: enough to keep an endpoint's request slots busy (two questions
        a pair), a modest batch for a local model."""
        return max(8, 2 * int(getattr(self.complete, "max_concurrency", 1)))

    def judge_pairs(self, prompt: Any, pairs: Sequence[tuple[Any, Any]]) -> list[Verdict]:
        """Compare each pair of answers to one prompt; all 2 x len(pairs) questions are asked together."""
        return self.judge_many([prompt] * len(pairs), pairs, chunk=max(1, len(pairs)))

    @staticmethod
    def _verdict(replies: list[str]) -> Verdict:
        orders = [parse_verdict(r) for r in replies]
        if None in orders:
            return Verdict(None, orders, replies, "unparsed")
        # Order 0 shows answer 1 as A; order 1 shows answer 2 as A.
        pick_first = orders[0] == "A", orders[1] == "B"
        if pick_first[0] == pick_first[1]:
            return Verdict(0 if pick_first[0] else 1, orders, replies, "agree")
        return Verdict(None, orders, replies, "disagree")

    def judge_many(
        self,
        prompts: Sequence[Any],
        pairs: Sequence[tuple[Any, Any]],
        progress: Callable[[int, int], None] | None = None,
        *,
        chunk: int | None = None,
    ) -> list[Verdict]:
        """Judge `pairs[i]` against `prompts[i]`, `chunk` pairs at a time (both orders of each):
        an endpoint keeps `max_concurrency` requests in flight across pairs and prompts, a local
        judge scores a chunk in one batch. `progress(done, total)` after each chunk."""
        if len(prompts) != len(pairs):
            raise AlignctlError(f"judge_many: {len(prompts)} prompts but {len(pairs)} pairs")
        step = chunk or self.window
        verdicts: list[Verdict] = []
        for start in range(0, len(pairs), step):
            conversations = []
            for prompt, (first, second) in zip(prompts[start : start + step], pairs[start : start + step], strict=True):
                p, a1, a2 = prompt_text(prompt), completion_text(first), completion_text(second)
                conversations += [self._messages(p, a1, a2), self._messages(p, a2, a1)]
            replies = self._replies(conversations)
            verdicts += [self._verdict(replies[k : k + 2]) for k in range(0, len(replies), 2)]
            if progress is not None:
                progress(len(verdicts), len(pairs))
        return verdicts

    def describe(self) -> dict[str, Any]:
        """Provenance for manifests: the client's description and a hash of the template."""
        describe = getattr(self.complete, "describe", None)
        client = describe() if callable(describe) else {"kind": type(self.complete).__name__}
        return {
            "kind": "judge",
            "client": client,
            "template_sha256": _sha256(self.template),
            "default_template": self.template == DEFAULT_TEMPLATE,
            **({"template_zh_sha256": _sha256(DEFAULT_TEMPLATE_ZH)} if self.template == DEFAULT_TEMPLATE else {}),
            "template": next((name for name, text in TEMPLATES.items() if text == self.template), "custom"),
            "orders": 2,
            "verdict_by": self.verdict_by,
        }


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- OpenAI-compatible client


class OpenAIChatClient:
    """`messages -> text` through an OpenAI-compatible `/chat/completions` endpoint, on the
    maintained `openai` client (`generation.server.openai_client`): pooled connections, so the
    judge keeps `max_concurrency` requests in flight; timeouts; connection errors, timeouts,
    408/409/429 and 5xx retried `max_retries` times with exponential backoff and jitter
    (Retry-After honoured); other HTTP errors fail at once, as one line naming the URL.

    The API key is read from the environment variable `api_key_env` at each call and travels
    only in that request's headers: it is never an attribute (the client underneath holds a
    placeholder), so it cannot reach a repr, a manifest, a pickle or an error message. An unset
    variable sends no Authorization header (a local vLLM server needs none).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60,
        max_retries: int = 3,
        *,
        max_tokens: int = 16,
        max_concurrency: int = 16,
    ) -> None:
        from alignctl.generation.server import require_openai

        if not re.match(r"^https?://", base_url):
            raise InputError(f"judge URL {base_url!r} must start with http:// or https://")
        require_openai("a judge endpoint")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.max_concurrency = max_concurrency  # requests in flight
        self._client = None

    def __repr__(self) -> str:
        return f"OpenAIChatClient(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {**vars(self), "_client": None}  # connections do not travel

    def describe(self) -> dict[str, Any]:
        """Safe for manifests: the endpoint, the model and the *name* of the key variable."""
        return {
            "kind": "openai",
            "url": self.url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }

    def _api(self):
        if self._client is None:
            from alignctl.generation.server import openai_client

            self._client = openai_client(self.base_url, "unused", self.timeout, self.max_retries)
        return self._client

    def __call__(self, messages: Messages) -> str:
        import openai

        from alignctl.generation.server import failure

        key = os.environ.get(self.api_key_env)

        def redact(text: str) -> str:
            return text.replace(key, "***") if key else text

        auth = f"Bearer {key}" if key else openai.Omit()
        error = None
        try:
            reply = self._api().chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=0,
                max_tokens=self.max_tokens,
                extra_headers={"Authorization": auth},
            )
            content = reply.choices[0].message.content
        except openai.APIError as exc:
            hint = None
            if isinstance(exc, openai.APIStatusError) and exc.status_code in (401, 403):
                hint = f"check the API key in ${self.api_key_env}" if key else f"${self.api_key_env} is not set"
            why = failure(exc, self.max_retries, self.model, redact)
            error = AlignctlError(f"judge endpoint {self.url}: {why}", hint=hint)
        except (ValueError, AttributeError, IndexError, TypeError) as exc:  # not an OpenAI reply
            error = AlignctlError(f"unexpected response from {self.url}: {redact(str(exc))[:200]}")
        if error is not None:  # raised outside the handler: no chained exception carries the body
            raise error
        return content or ""
