"""The `requests.Session` the upstream client sends through, and requests prepared cheaply.

`Session.request()` re-reads the process environment (proxies, `NO_PROXY`, CA bundles, netrc)
and re-merges every setting on each call: about half a millisecond of CPU per call here. The
node reads those once, when the session is built, and sends `PreparedRequest`s it assembles
itself through `Session.send()`; the adapter, its urllib3 pool and `Retry` are unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_environ_proxies

from app.settings import Settings
from app.upstream.attempts import TRACKED_POOLS
from app.upstream.backoff import Backoff
from app.upstream.retry_policy import DeadlineRetry
from app.version import __version__


def build_session(settings: Settings) -> requests.Session:
    """A session with a sized pool, the Gemini retry policy (POST included), the upstream
    key as a header, and the environment's proxy and CA settings read now, once."""
    retry = DeadlineRetry.for_gemini(
        settings.max_retry_attempts,
        Backoff(
            settings.retry_backoff_base,
            settings.retry_backoff_multiplier,
            settings.retry_backoff_max,
        ),
    )
    adapter = TrackedAdapter(
        pool_connections=4, pool_maxsize=settings.upstream_pool_size, max_retries=retry
    )
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(
        {
            "x-goog-api-key": settings.gemini_api_key,
            "content-type": "application/json",
            "user-agent": f"l104-node/{__version__}",
        }
    )
    session.proxies = get_environ_proxies(settings.gemini_api_base)  # honours NO_PROXY
    session.verify = ca_bundle(os.environ) or True
    session.trust_env = False  # read above, not again on every call
    return session


class TrackedAdapter(HTTPAdapter):
    """requests' adapter over urllib3 pools whose connections the current attempt tracks
    (`app.upstream.attempts`), so that a hedge or the stall timer can close them."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = TRACKED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = TRACKED_POOLS
        return manager


def ca_bundle(environ: Mapping[str, str]) -> str | None:
    """The CA bundle requests would use from the environment, if any."""
    return environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE") or None


def prepare(
    session: requests.Session,
    method: str,
    url: str,
    body: bytes | None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str | None] | None = None,
) -> requests.PreparedRequest:
    """What `Session.prepare_request` makes of a call, for the node's own calls only: a
    validated URL (model names and paging parameters are checked before this), a bytes
    body, the session's headers (a header given as None is left out); no cookies, auth or
    hooks."""
    prepared = requests.PreparedRequest()
    prepared.method = method
    prepared.url = f"{url}?{urlencode(params)}" if params else url
    prepared.headers = CaseInsensitiveDict(session.headers)  # type: ignore[arg-type]
    for name, value in (headers or {}).items():
        if value is None:
            prepared.headers.pop(name, None)
        else:
            prepared.headers[name] = value
    if body is not None or method == "POST":
        prepared.body = body or b""
        prepared.headers["Content-Length"] = str(len(prepared.body))
    prepared.hooks = {"response": []}
    return prepared
