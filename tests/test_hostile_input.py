"""Hostile input over real HTTP: never a 5xx from the node's own code, nothing malformed
upstream, no CORS, no secrets back."""

from __future__ import annotations

import http.client
import json
import re

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import UPSTREAM_KEY
from tests.support.processes import Service
from tests.support.simulator_client import SimulatorControl

UPSTREAM_PATH = re.compile(
    r"/v1beta/models/[A-Za-z0-9][A-Za-z0-9._-]*:(generateContent|streamGenerateContent|countTokens)"
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"contents": json_values}).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
)
paths = st.one_of(
    st.sampled_from(["gemini-3.8-flash", "models/gemini-3.8-flash", "gemini-x", "..", "%2e%2e"]),
    st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=200),
).map(lambda model: model.replace(" ", "%20").replace("#", "%23").replace("?", "%3F"))
methods = st.sampled_from(["generateContent", "streamGenerateContent", "countTokens", "x", ""])
content_types = st.sampled_from(
    ["application/json", "text/plain", "application/json; charset=latin-1", "", "x/y+json"]
)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _raw_post(node: Service, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    headers = {"Content-Type": content_type} if content_type else {}
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@FUZZ
@given(model=paths, method=methods, body=bodies, content_type=content_types)
def test_fuzzed_requests_get_4xx_or_an_answer(
    node: Service,
    simulator: SimulatorControl,
    model: str,
    method: str,
    body: bytes,
    content_type: str,
) -> None:
    status, raw = _raw_post(node, f"/v1beta/models/{model}:{method}", body, content_type)
    assert status < 500, raw[:300]
    if status >= 400:
        error = json.loads(raw)["error"]
        assert error["code"] == status and error["status"] and error["message"]
        assert b"Traceback" not in raw
    assert UPSTREAM_KEY.encode() not in raw
    for seen in simulator.requests(limit=5):
        assert UPSTREAM_PATH.fullmatch(seen["path"]), seen["path"]
        assert isinstance(seen["body"], dict)


def test_huge_nesting_and_long_headers(node: Service, simulator: SimulatorControl) -> None:
    deep = b'{"contents": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    status, _ = _raw_post(
        node, "/v1beta/models/gemini-3.8-flash:generateContent", deep, "application/json"
    )
    assert status == 400
    response = requests.post(
        f"{node.url}/v1beta/models/gemini-3.8-flash:generateContent",
        json={"contents": [{"parts": [{"text": "x"}]}]},
        headers={"X-Long": "y" * 9000},
        timeout=10,
    )
    assert response.status_code == 431  # gunicorn's limit_request_field_size
    too_many = {f"X-H{i}": "v" for i in range(120)}
    response = requests.get(f"{node.url}/health", headers=too_many, timeout=10)
    assert response.status_code == 431  # gunicorn's limit_request_fields
    assert simulator.calls() == 0


def test_cors_is_off_by_default(node: Service) -> None:
    preflight = requests.options(
        f"{node.url}/v1beta/models/gemini-3.8-flash:generateContent",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    response = requests.get(
        f"{node.url}/health", headers={"Origin": "https://evil.example"}, timeout=5
    )
    assert "Access-Control-Allow-Origin" not in response.headers
