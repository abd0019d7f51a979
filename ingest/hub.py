"""Before loading a model by Hugging Face id: can the Hub be reached?

Without this, a machine that cannot reach the Hub (a cluster node, a firewalled
office) spends a minute and a half retrying every file of the model through dozens of
warning lines before the error. One quick request answers instead: the Hub answers
(load as usual), or it does not and the model is in the local cache (load from the
cache alone), or it does not and the model is not there (one line that says what to
do). Local directories and HF_HUB_OFFLINE=1 never ask.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from .errors import RagError

PROBE_TIMEOUT = 4.0        # seconds; a Hub that answers at all answers well within it
OFFLINE_HELP = ("fetch it on a machine with internet with `rag models download` (then "
                "HF_HUB_OFFLINE=1 reads the cache), or give a local directory; see README, "
                "\"Offline use\"")


class HubUnreachable(RagError):
    """A model named by Hub id that is neither reachable nor cached."""


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in ("1", "true", "yes", "on")


def endpoint() -> str:
    from huggingface_hub import constants
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or constants.ENDPOINT


@functools.lru_cache(maxsize=8)
def _probe(url: str, timeout: float) -> str:
    """"" when `url` answers anything at all within `timeout`, else why not."""
    from huggingface_hub.utils import get_session
    try:
        get_session().head(url, timeout=timeout, follow_redirects=False)
    except Exception as e:  # noqa: BLE001 - refused, timed out, DNS, proxy, TLS alike
        return (str(e).splitlines() or [type(e).__name__])[0][:200] or type(e).__name__
    return ""


def cached_snapshot(name: str, revision: str | None = None) -> str | None:
    """The local directory of `name`'s cached snapshot, or None."""
    from huggingface_hub import snapshot_download
    try:
        return snapshot_download(name, revision=revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached, or not a Hub id at all
        return None


def offline_source(name: str, what: str, revision: str | None = None, *,
                   timeout: float = PROBE_TIMEOUT) -> str | None:
    """What to load instead of Hub id `name` when the Hub cannot be reached: the local
    directory of its cached snapshot (loading that asks the Hub nothing, where
    `local_files_only` still lets some libraries retry for minutes). None: load `name`
    as usual (a local path; offline mode, where the libraries read the cache
    themselves; a Hub that answers). Raises HubUnreachable, one line, when the Hub
    cannot be reached and the model is not cached."""
    if Path(name).expanduser().exists() or _offline():
        return None
    url = endpoint()
    why = _probe(url, timeout)
    if not why:
        return None
    snapshot = cached_snapshot(name, revision)
    if snapshot:
        return snapshot
    raise HubUnreachable(f"cannot load {what} {name!r}: the Hugging Face Hub ({url}) cannot "
                         f"be reached ({why}) and the model is not in the local cache; "
                         + OFFLINE_HELP)
