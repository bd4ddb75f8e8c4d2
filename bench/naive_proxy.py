"""Reference proxies, run in the same benchmark as the node, under the same gunicorn settings
and with none of the node's work (validation, rotation, state, metrics, logs). `PROXY_KIND`:

- `naive` (the issue's reference point): Flask + requests + pybreaker, `breaker.call()` around
  `session.post()`;
- `bare`: Flask + one `requests.Session` that does not re-read the environment per call, no
  breaker: a plain proxy on gunicorn, Flask and `session.post()`;
- `local`: gunicorn + Flask answering a canned generateContent reply itself, with no upstream
  call at all: what the server side alone costs before a gateway has done anything.

    PROXY_KIND=bare UPSTREAM=http://127.0.0.1:PORT/v1beta UPSTREAM_KEY=... \
        gunicorn bench.naive_proxy:app
"""

from __future__ import annotations

import os

import pybreaker
import requests
from flask import Flask, Response, request

KINDS = ("naive", "bare", "local")
app = Flask(__name__)
_KIND = os.environ.get("PROXY_KIND", "naive")
if _KIND not in KINDS:
    raise SystemExit(f"PROXY_KIND must be one of {', '.join(KINDS)}, not {_KIND!r}")
_session = requests.Session()
_session.trust_env = _KIND == "naive"
_breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
_UPSTREAM = os.environ.get("UPSTREAM", "")
_HEADERS = {
    "x-goog-api-key": os.environ.get("UPSTREAM_KEY", ""),
    "content-type": "application/json",
}
_CANNED = (
    b'{"candidates":[{"content":{"role":"model","parts":[{"text":"L104 reference reply."}]},'
    b'"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,'
    b'"candidatesTokenCount":4,"totalTokenCount":9},"modelVersion":"reference"}'
)


@app.get("/health")
def health() -> Response:
    """Liveness, for the harness's readiness wait."""
    return Response("ok")


@app.post("/v1beta/models/<path:target>")
def forward(target: str) -> Response:
    """Pass the call on as it came; a stream is passed on chunk by chunk as it arrives."""
    if _KIND == "local":
        request.get_data()
        return Response(_CANNED, content_type="application/json")
    url = f"{_UPSTREAM}/models/{target}"
    streamed = target.endswith(":streamGenerateContent")

    def send() -> requests.Response:
        return _session.post(
            url,
            data=request.get_data(),
            params=request.args.to_dict(),
            headers=_HEADERS,
            timeout=(5, 110),
            stream=streamed,
        )

    answer = _breaker.call(send) if _KIND == "naive" else send()
    content_type = answer.headers.get("content-type", "application/json")
    if streamed:
        chunks = answer.raw.stream(65536, decode_content=False)
        return Response(chunks, status=answer.status_code, content_type=content_type)
    return Response(answer.content, status=answer.status_code, content_type=content_type)
