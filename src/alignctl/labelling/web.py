"""`label --by human --serve`: the labelling page, server-rendered (Starlette + Jinja2, no script).

Pages: `/` (enter your name), `/label` (your next question: a comparison, a best/worst or a
ranking screen, with your progress and everyone's), POST `/answer`, `/undo`, `/leave`, and
`/style.css`. Every answer goes to the person's journal before the reply (`team.py`), so a killed
server loses nothing that was answered; after a restart people continue where they were (their
name cookie is signed with a key kept beside the journals).

Safety: the server listens on 127.0.0.1 unless `--host` says otherwise, and then every request
must carry the access token printed at start (`?token=` once, then a cookie). On loopback the Host
header must name a loopback host (a page on another site cannot reach it by DNS rebinding). Text
from prompts and answers is autoescaped by Jinja2 and the Content-Security-Policy allows no script
at all. POSTs need the form's CSRF token to match its SameSite=Strict cookie, and a same-origin
Origin header when the browser sends one. No request names a file: the only files touched are the
journals, whose names are made from the annotator's name (`team.journal_name`). Bad requests are
4xx pages, the journal is written whole lines at a time (`files.Appender`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from urllib.parse import parse_qs

from alignctl.labelling.core import Answered, BadAnswer, Question
from alignctl.labelling.team import Team, clean_name

MAX_BODY = 256 * 1024  # bytes of a form: a written answer is at most core.MAX_TEXT characters
LOOPBACK = ("127.0.0.1", "localhost", "::1")
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make a browser send "Origin: null"
    "Cache-Control": "no-store",
}


def host_of(header: str) -> str:
    """The host of a Host header, without the port ("[::1]:8000" -> "::1")."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Signer:
    def __init__(self, key: bytes) -> None:
        self.key = key

    def sign(self, name: str) -> str:
        raw = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
        return f"{raw}.{self._mac(raw)}"

    def name(self, cookie: str | None) -> str | None:
        raw, _, mac = (cookie or "").partition(".")
        if not raw or not hmac.compare_digest(mac, self._mac(raw)):
            return None
        try:
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None

    def _mac(self, raw: str) -> str:
        return hmac.new(self.key, raw.encode(), hashlib.sha256).hexdigest()[:32]


def make_app(
    team: Team, *, key: bytes, token: str | None, loopback: bool, on_complete: Callable[[], None] | None = None
):
    """The ASGI app. `on_complete` is called once every prompt has K answers (`--until-done`)."""
    import jinja2
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import Route

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("alignctl.labelling", "templates"),
        autoescape=True,  # every prompt and answer is text, never markup
        trim_blocks=True,
        lstrip_blocks=True,
    )
    css = (env.loader.get_source(env, "style.css"))[0]
    signer = Signer(key)

    def page(request: Request, template: str, status: int = 200, **values) -> HTMLResponse:
        html = env.get_template(template).render(csrf=request.state.csrf, name=request.state.name, **values)
        return HTMLResponse(html, status_code=status)

    def problem(request: Request, status: int, message: str) -> HTMLResponse:
        return page(request, "problem.html", status, message=message)

    async def guard(request: Request, call_next) -> Response:
        state = request.state
        state.name, state.csrf = None, request.cookies.get("alignctl_csrf") or ""
        fresh_csrf = len(state.csrf) < 32
        if fresh_csrf:
            state.csrf = secrets.token_urlsafe(32)
        response = await _check(request, state, call_next)
        for k, v in HEADERS.items():
            response.headers[k] = v
        if fresh_csrf:
            response.set_cookie("alignctl_csrf", state.csrf, httponly=True, samesite="strict")
        return response

    async def _check(request: Request, state, call_next) -> Response:
        if loopback and host_of(request.headers.get("host", "")) not in LOOPBACK:
            return problem(request, 400, "this page answers on its loopback address only")
        if token:
            given = request.query_params.get("token")
            if given is not None and hmac.compare_digest(given, token):
                out = RedirectResponse(request.url.path, status_code=303)
                out.set_cookie("alignctl_token", token, httponly=True, samesite="strict")
                return out
            if not hmac.compare_digest(request.cookies.get("alignctl_token", ""), token):
                return problem(request, 403, "this page needs the access token that alignctl label --serve printed")
        state.name = signer.name(request.cookies.get("alignctl_annotator"))
        if request.method == "POST":
            refused = await _read_form(request, state)
            if refused:
                return refused
        return await call_next(request)

    async def _read_form(request: Request, state) -> Response | None:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            return problem(request, 415, "forms only")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return problem(request, 413, "that form is too large")
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
        except (UnicodeDecodeError, ValueError):
            return problem(request, 400, "that form could not be read")
        state.form = {k: v[-1] for k, v in fields.items()}
        origin = request.headers.get("origin")
        if origin and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            return problem(request, 403, "a form from another site")
        if not hmac.compare_digest(state.form.get("csrf", ""), request.cookies.get("alignctl_csrf", "") or "-"):
            return problem(request, 403, "the form's token does not match: reload the page and try again")
        return None

    # ----------------------------------------------------------------------------- pages

    async def home(request: Request) -> Response:
        if request.state.name:
            return RedirectResponse("/label", status_code=303)
        return page(request, "name.html", progress=team.progress(), questions=len(team.questions))

    async def enter(request: Request) -> Response:
        try:
            name = clean_name(request.state.form.get("name", ""))
        except BadAnswer as exc:
            return page(request, "name.html", 400, error=str(exc), progress=team.progress())
        out = RedirectResponse("/label", status_code=303)
        out.set_cookie("alignctl_annotator", signer.sign(name), httponly=True, samesite="strict")
        return out

    async def label(request: Request) -> Response:
        if not request.state.name:
            return RedirectResponse("/", status_code=303)
        q = team.next_for(request.state.name)
        return question_page(request, q) if q else finished(request)

    def finished(request: Request) -> Response:
        return page(request, "done.html", progress=team.progress(request.state.name), complete=team.complete())

    def question_page(request: Request, q: Question, status: int = 200, **values) -> Response:
        session = team.member(request.state.name).session
        group = team.by_pid[q.pid]
        view = session.view(q, group.index(q) + 1, len(group))
        return page(
            request, "question.html", status, view=view, q=team.questions.index(q),
            progress=team.progress(request.state.name), values=values.pop("values", {}), **values,
        )  # fmt: skip

    async def answer(request: Request) -> Response:
        name, form = request.state.name, request.state.form
        if not name:
            return problem(request, 403, "enter your name first")
        try:
            q = team.questions[int(form.get("q", ""))]
        except (ValueError, IndexError):
            return problem(request, 400, "no such question")
        session = team.member(name).session
        try:
            if q.pair is not None:
                session.compare(q, form.get("pick", ""))
            else:
                confirm = screen_answer(session, q, form)
                if confirm is not None:
                    return question_page(request, q, **confirm)
        except Answered as exc:
            return problem(request, 409, f"{exc} (in another tab?)")
        except BadAnswer as exc:
            return question_page(request, q, 400, error=str(exc), values=form)
        if on_complete is not None and team.complete():
            on_complete()
            return finished(request)
        return RedirectResponse("/label", status_code=303)

    def screen_answer(session, q: Question, form: dict) -> dict | None:
        """Journal a screen's answer; or a page to show first (the written answer, to confirm)."""
        action, n = form.get("action", ""), len(session.view(q).answers)
        if action in ("equal", "skip"):
            session.rank(q, order=[], skip=action == "skip")
            return None
        if action == "edit":
            return {"values": form}
        if action != "save":
            raise BadAnswer("choose save, all equal or skip")
        if q.mode == "rank":
            ranks = [_number(form.get(f"rank-{k + 1}"), n, f"rank of answer {k + 1}") for k in range(n)]
            if sorted(ranks) != list(range(n)):
                raise BadAnswer(f"give each answer a different rank, 1 to {n}")
            session.rank(q, order=sorted(range(n), key=lambda k: ranks[k]))
            return None
        best, worst = _number(form.get("best"), n, "the best"), _number(form.get("worst"), n, "the worst")
        if best == worst:
            raise BadAnswer("the best and the worst must be different answers")
        text = form.get("text", "").replace("\r\n", "\n").strip("\n")
        if text.strip() and text != session.view(q).answers[best].strip("\n") and form.get("confirmed") != "1":
            return {"values": form, "confirm": text}
        same = not text.strip() or text == session.view(q).answers[best].strip("\n")
        session.rank(q, order=[best, worst], text=None if same else text)
        return None

    async def undo(request: Request) -> Response:
        if request.state.name:
            team.undo(request.state.name)
        return RedirectResponse("/label", status_code=303)

    async def leave(request: Request) -> Response:
        if request.state.name:
            team.claims.pop(request.state.name.casefold(), None)
        out = RedirectResponse("/", status_code=303)
        out.delete_cookie("alignctl_annotator")
        return out

    async def style(request: Request) -> Response:
        return Response(css, media_type="text/css")

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if not hasattr(request.state, "csrf"):  # raised before the guard ran (routing)
            request.state.csrf, request.state.name = "", None
        response = problem(request, exc.status_code, exc.detail)
        for k, v in HEADERS.items():
            response.headers[k] = v
        return response

    routes = [
        Route("/", home, methods=["GET"]),
        Route("/name", enter, methods=["POST"]),
        Route("/label", label, methods=["GET"]),
        Route("/answer", answer, methods=["POST"]),
        Route("/undo", undo, methods=["POST"]),
        Route("/leave", leave, methods=["POST"]),
        Route("/style.css", style, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)],
        exception_handlers={HTTPException: http_error},
    )


def _number(raw: str | None, n: int, what: str) -> int:
    """A 1-based answer number from a form -> its 0-based position, or BadAnswer."""
    try:
        k = int(raw or "")
    except ValueError:
        raise BadAnswer(f"pick {what}") from None
    if not 1 <= k <= n:
        raise BadAnswer(f"{what}: answers are numbered 1 to {n}")
    return k - 1


def new_secrets() -> dict[str, str]:
    return {"key": secrets.token_hex(32), "token": secrets.token_urlsafe(24), "made": str(int(time.time()))}
