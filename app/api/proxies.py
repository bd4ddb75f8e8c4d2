"""Trust X-Forwarded-For/-Proto only from the proxies named in TRUSTED_PROXIES."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

from app.settings import UNIX_SOCKET_PEER

WSGIApp = Any


class TrustedProxyFix:
    """werkzeug's ProxyFix (one hop) for requests whose peer is a trusted proxy; else as is."""

    def __init__(self, app: WSGIApp, trusted: Iterable[str]) -> None:
        self._plain = app
        self._fixed = ProxyFix(app, x_for=1, x_proto=1)
        trusted = list(trusted)
        # Over a unix socket gunicorn gives no peer address: "unix" trusts that peer.
        self._unix = UNIX_SOCKET_PEER in trusted
        self._networks = [
            ipaddress.ip_network(n, strict=False) for n in trusted if n != UNIX_SOCKET_PEER
        ]

    def _trusted(self, address: str | None) -> bool:
        if not address:
            return self._unix
        try:
            peer = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(peer in network for network in self._networks)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self._trusted(environ.get("REMOTE_ADDR")):
            return self._fixed(environ, start_response)
        return self._plain(environ, start_response)
