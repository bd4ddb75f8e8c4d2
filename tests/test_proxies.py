"""X-Forwarded-For/-Proto are believed only from trusted proxies."""

from __future__ import annotations

from typing import Any

import pytest

from app.api.proxies import TrustedProxyFix


def _seen(trusted: list[str], remote_addr: str) -> tuple[str, str]:
    seen: dict[str, str] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["addr"] = environ["REMOTE_ADDR"]
        seen["scheme"] = environ["wsgi.url_scheme"]
        return []

    environ = {
        "REMOTE_ADDR": remote_addr,
        "wsgi.url_scheme": "http",
        "HTTP_X_FORWARDED_FOR": "198.51.100.1, 203.0.113.9",
        "HTTP_X_FORWARDED_PROTO": "https",
    }
    TrustedProxyFix(app, trusted)(environ, lambda *a: None)
    return seen["addr"], seen["scheme"]


@pytest.mark.parametrize(
    ("trusted", "remote_addr", "expected"),
    [
        ([], "127.0.0.1", ("127.0.0.1", "http")),
        (["127.0.0.1"], "127.0.0.1", ("203.0.113.9", "https")),  # one hop: the proxy's entry
        (["10.0.0.0/8"], "10.1.2.3", ("203.0.113.9", "https")),
        (["10.0.0.0/8"], "192.0.2.1", ("192.0.2.1", "http")),
        (["127.0.0.1"], "", ("", "http")),  # a unix-socket peer is not an IP
        (["unix"], "", ("203.0.113.9", "https")),
        (["unix"], "127.0.0.1", ("127.0.0.1", "http")),
    ],
)
def test_forwarded_headers_only_from_trusted_peers(
    trusted: list[str], remote_addr: str, expected: tuple[str, str]
) -> None:
    assert _seen(trusted, remote_addr) == expected
