"""Run the labelling page (`web.make_app`) under uvicorn until Ctrl-C, or until every prompt has K answers.

The socket is bound here, before the server starts, so a port in use is one line (exit 2) and
`--port 0` (any free port) still prints the real URL. The cookie key and the access token live
in `<annotations>/server.json` (mode 0600), so a restarted server keeps people signed in and the
URL it printed keeps working.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from pathlib import Path

from alignctl.console import info
from alignctl.errors import OutputError
from alignctl.labelling.team import Team

SECRETS = "server.json"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secrets(folder: Path) -> dict[str, str]:
    from alignctl.files import atomic_path
    from alignctl.labelling.web import new_secrets

    path = folder / SECRETS
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    folder.mkdir(parents=True, exist_ok=True)
    made = new_secrets()
    with atomic_path(path) as tmp:
        os.chmod(tmp, 0o600)
        tmp.write_text(json.dumps(made), encoding="utf-8")
    return made


def bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError as exc:
        raise OutputError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (pass another --port)") from None
    sock.set_inheritable(True)
    return sock


def serve(team: Team, *, host: str, port: int, until_done: bool, out: Path) -> None:
    """Serve until Ctrl-C (or, with `until_done`, until every prompt has K answers)."""
    import uvicorn

    from alignctl.labelling.web import make_app

    loopback = is_loopback(host)
    keys = _secrets(team.folder)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    server: uvicorn.Server | None = None

    def complete() -> None:
        import asyncio

        asyncio.get_running_loop().call_later(0.5, setattr, server, "should_exit", True)  # the reply goes first

    app = make_app(
        team,
        key=bytes.fromhex(keys["key"]),
        token=None if loopback else keys["token"],
        loopback=loopback,
        on_complete=complete if until_done else None,
    )
    shown = host if host not in ("0.0.0.0", "::") else socket.gethostname()
    shown = f"[{shown}]" if ":" in shown else shown
    url = f"http://{shown}:{port}/" + ("" if loopback else f"?token={keys['token']}")
    p = team.progress()
    info(
        f"labelling page: {url}\n  {p['prompts']} prompts, {team.k} annotator(s) each; {p['complete']} done; "
        f"answers kept in {team.folder}/; "
        + ("ends when every prompt has its answers" if until_done else f"Ctrl-C ends it and writes {out}")
    )
    if not loopback:
        info("  not loopback: every request needs the token in that URL (share it only with your annotators)")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then raises the Ctrl-C it caught
        pass
    finally:
        sock.close()
        team.close()
