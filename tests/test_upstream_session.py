"""The upstream session: environment read once, requests prepared as requests would."""

from __future__ import annotations

import pytest
import requests

from app.settings import Settings
from app.upstream.session import build_session, prepare

GOOGLE = "https://generativelanguage.googleapis.com/v1beta"


def _settings(base: str = GOOGLE) -> Settings:
    return Settings.from_env({"GEMINI_API_KEY": "upstream-s3cr3t", "GEMINI_API_BASE": base})


def test_proxy_and_ca_bundle_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp.pem")
    session = build_session(_settings())
    assert session.proxies["https"] == "http://proxy.internal:3128"
    assert session.verify == "/etc/ssl/corp.pem"
    assert not session.trust_env, "the environment is read once, not on every call"


def test_no_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", ".googleapis.com")
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    session = build_session(_settings())
    assert "https" not in session.proxies
    assert session.verify is True


@pytest.mark.parametrize(
    ("method", "url", "body", "params", "headers"),
    [
        ("POST", f"{GOOGLE}/models/gemini-2.5-flash:generateContent", b'{"a": 1}', None, None),
        (
            "POST",
            f"{GOOGLE}/models/gemini-2.5-flash:streamGenerateContent",
            b"{}",
            {"alt": "sse"},
            {"accept-encoding": "identity"},
        ),
        ("GET", f"{GOOGLE}/models", None, {"pageSize": "5", "pageToken": "abc_-="}, None),
        ("GET", f"{GOOGLE}/models/gemini-2.5-flash", None, None, None),
    ],
)
def test_prepared_like_requests_prepares_them(
    method: str,
    url: str,
    body: bytes | None,
    params: dict[str, str] | None,
    headers: dict[str, str] | None,
) -> None:
    session = build_session(_settings())
    ours = prepare(session, method, url, body, params, headers)
    theirs = session.prepare_request(
        requests.Request(method, url, data=body, params=params, headers=headers)
    )
    assert (ours.method, ours.url, ours.body) == (theirs.method, theirs.url, theirs.body)
    assert dict(ours.headers.lower_items()) == dict(theirs.headers.lower_items())
