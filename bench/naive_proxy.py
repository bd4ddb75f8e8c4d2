"""Reference proxies, run in the same benchmark as the node, under the same gunicorn settings
and with none of the node's work (validation, rotation, state, metrics, logs):

- naive (the issue's reference point): Flask + requests + pybreaker, `breaker.call()` around
  `session.post()`;
- bare (`BARE=1`): Flask + one `requests.Session` that does not re-read the environment per
  call, no breaker: the floor of any proxy built on gunicorn, Flask and requests.

    UPSTREAM=http://127.0.0.1:PORT/v1beta UPSTREAM_KEY=... gunicorn bench.naive_proxy:app
"""

from __future__ import annotations

import os

import pybreaker
import requests
from flask import Flask, Response, request

app = Flask(__name__)
_BARE = os.environ.get("BARE") == "1"
_session = requests.Session()
_session.trust_env = not _BARE
_breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
_UPSTREAM = os.environ.get("UPSTREAM", "")
_HEADERS = {
    "x-goog-api-key": os.environ.get("UPSTREAM_KEY", ""),
    "content-type": "application/json",
}


@app.get("/health")
def health() -> Response:
    """Liveness, for the harness's readiness wait."""
    return Response("ok")


@app.post("/v1beta/models/<path:target>")
def forward(target: str) -> Response:
    """Pass the call on as it came; a stream is passed on chunk by chunk as it arrives."""
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

    answer = send() if _BARE else _breaker.call(send)
    content_type = answer.headers.get("content-type", "application/json")
    if streamed:
        chunks = answer.raw.stream(65536, decode_content=False)
        return Response(chunks, status=answer.status_code, content_type=content_type)
    return Response(answer.content, status=answer.status_code, content_type=content_type)
