"""A model (or dataset) named by its hub id, checked with one request before anything is written
or loaded.

transformers finds out that a hub id is wrong, or that the hub is out of reach, only when it
downloads the first file, after the stage has opened its output; without a network it retries
every file several times first (tens of seconds of retry messages). So a hub id is asked about
once, here, with a short timeout and no retries: a model the hub does not have, a gated one, or
no network, is one line and exit 2 at once. A model already in the local Hugging Face cache is
used from there when the hub cannot be reached (offline mode is switched on for this process,
with one line saying so), as it is under `HF_HUB_OFFLINE=1`, where nothing is asked at all.
datasets retries the same way (five times, ~25 s), so a hub dataset id gets the same one request
(`check_dataset`, called by readers.py).
"""

from __future__ import annotations

import os
import sys

from alignctl.errors import ModelError

TIMEOUT = 10.0  # seconds for the one request
OFFLINE_HINT = "offline, give a local model dir or the alias smollm2-135m"


def offline() -> bool:
    """`HF_HUB_OFFLINE` as huggingface_hub reads it (1/ON/YES/TRUE)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # a malformed id: the request below names the problem
        return False


def _go_offline() -> None:
    """Offline mode for the rest of this process, so loading reads the cache without retrying."""
    import huggingface_hub.constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets = sys.modules.get("datasets")  # read at its import too
    if datasets is not None:
        datasets.config.HF_HUB_OFFLINE = True


def check_model(repo_id: str) -> None:
    """One line (ModelError) when the hub id cannot be loaded: not in the cache while offline, not
    on the hub, gated, or the hub out of reach with no cached copy."""
    if offline():
        if _cached(repo_id):
            return
        raise ModelError(f"{repo_id}: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set ({OFFLINE_HINT})")
    try:
        problem = _ask(repo_id, "model")
    except _Unreachable as exc:
        if not _cached(repo_id):
            raise ModelError(f"{repo_id}: cannot reach the Hugging Face Hub ({exc}); {OFFLINE_HINT}") from None
        from alignctl.console import note

        _go_offline()
        note(f"{repo_id}: the Hugging Face Hub is out of reach; using the copy in the local cache")
        return
    if problem:
        raise ModelError(f"{repo_id}: {problem}")


def check_dataset(repo_id: str) -> str | None:
    """The same one request for a hub dataset id (datasets itself retries five times, about 25 s,
    without a network). Not on the hub, gated, or refused: one line (InputError). Out of reach:
    offline mode is switched on, so datasets reads its own cache or fails at once, and the reason
    the hub did not answer is returned for that failure's message."""
    from alignctl.errors import InputError

    if offline():
        _go_offline()  # datasets may have read the variable at its import, before it was set
        return None
    try:
        problem = _ask(repo_id, "dataset")
    except _Unreachable as exc:
        _go_offline()
        return str(exc)
    if problem:
        raise InputError(f"{repo_id}: {problem}")
    return None


class _Unreachable(Exception):
    """The network failed before the hub answered (refused, unknown host, timed out)."""


def _ask(repo_id: str, kind: str) -> str | None:
    """None when the hub has `repo_id` and lets us read it, otherwise what is wrong, in words;
    _Unreachable when the hub did not answer."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError

    api = HfApi()
    info = api.model_info if kind == "model" else api.dataset_info
    try:
        info(repo_id, timeout=TIMEOUT)
    except RepositoryNotFoundError:
        return f"no such {kind} on the Hugging Face Hub (a private one needs $HF_TOKEN)"
    except GatedRepoError:
        return f"a gated {kind}: accept its terms on the hub, then set $HF_TOKEN"
    except HFValidationError as exc:
        return f"not a valid hub id ({_first_line(exc)})"
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "an error")
        return f"the Hugging Face Hub answered {status} ({_first_line(exc)})"
    except _network_errors() as exc:
        raise _Unreachable(_first_line(exc)) from None
    return None


def _network_errors() -> tuple[type[BaseException], ...]:
    """What the hub client raises when the network fails (its HTTP library's transport errors)."""
    import huggingface_hub.utils._http as http

    client = getattr(http, "httpx2", None) or getattr(http, "httpx", None)
    transport = getattr(client, "TransportError", None)
    return (OSError, *((transport,) if isinstance(transport, type) else ()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
