"""The upstream Gemini client: one requests.Session behind a narrow seam.

Everything that talks HTTP to Gemini goes through `UpstreamClient`; `reset()` swaps the one
session (and its connection pool) for a new one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

import requests
from flask import current_app
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from app import events, metrics
from app.backoff import Backoff
from app.clock import SYSTEM_CLOCK, Clock
from app.errors import UpstreamMalformed, UpstreamTimeout, UpstreamUnavailable
from app.retry_policy import DeadlineRetry, current_deadline
from app.settings import Settings
from app.sse import iter_event_data
from app.upstream_errors import error_from_response
from app.version import __version__

_READ_SIZE = 64 * 1024


def build_session(settings: Settings) -> requests.Session:
    """A session with a sized pool and the Gemini retry policy (POST included)."""
    retry = DeadlineRetry.for_gemini(
        settings.max_retry_attempts,
        Backoff(
            settings.retry_backoff_base,
            settings.retry_backoff_multiplier,
            settings.retry_backoff_max,
        ),
    )
    adapter = HTTPAdapter(
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
    return session


class ClientHealth:
    """Connection errors count up, successes count down; past the threshold: reset."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.errors = 0
        self._lock = threading.Lock()

    def error(self) -> bool:
        """Count an error; True when the threshold is reached."""
        with self._lock:
            self.errors += 1
            metrics.HTTP_CLIENT_ERRORS.inc()
            return self.errors >= self.threshold

    def success(self) -> None:
        """Count a success."""
        if self.errors:
            with self._lock:
                if self.errors:
                    self.errors -= 1
                    metrics.HTTP_CLIENT_ERRORS.dec()

    def clear(self) -> int:
        """Start counting afresh (the client was replaced); returns the count it had."""
        with self._lock:
            errors, self.errors = self.errors, 0
            metrics.HTTP_CLIENT_ERRORS.dec(errors)
            return errors


class UpstreamClient:
    """Calls Gemini for the node and maps every failure to an `UpstreamError`."""

    def __init__(self, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        self._settings = settings
        self._base = settings.gemini_api_base
        self._timeout = settings.upstream_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._session = build_session(settings)
        self.health = ClientHealth(settings.http_client_error_threshold)
        self.last_reset: float | None = None

    def reset(self, reason: str = "heal") -> None:
        """Replace the session and its pool; calls already running finish on the old one."""
        with self._lock:
            old, self._session = self._session, build_session(self._settings)
            self.last_reset = self._clock.now()
            errors = self.health.clear()
        metrics.LAST_HTTP_RESET.set(self.last_reset)
        # Closing the old pool drops only its idle connections; ones in use finish first.
        old.close()
        events.http_client_reset(reason, errors)

    def _connection_failed(self) -> None:
        if self.health.error():
            self.reset("errors")

    def generate(self, model: str, body: bytes) -> tuple[dict[str, Any], bytes]:
        """`models/{model}:generateContent`; returns the parsed and the raw answer."""
        raw = self._post_json(model, "generateContent", body)
        return _parse_object(raw, model), raw

    def count_tokens(self, model: str, body: bytes) -> bytes:
        """`models/{model}:countTokens`; returns the raw answer."""
        raw = self._post_json(model, "countTokens", body)
        _parse_object(raw, model)
        return raw

    def list_models(self, params: dict[str, str]) -> bytes:
        """`GET models` with paging parameters; returns the raw answer."""
        raw = self._request("GET", f"{self._base}/models", None, None, params=params)
        _parse_object(raw, None)
        return raw

    def get_model(self, model: str) -> bytes:
        """`GET models/{model}`; returns the raw answer."""
        raw = self._request("GET", f"{self._base}/models/{model}", None, model)
        _parse_object(raw, model)
        return raw

    def stream(self, model: str, body: bytes) -> Generator[bytes, None, None]:
        """`streamGenerateContent?alt=sse`: yields each event's JSON payload as it arrives.

        The request is made when the iterator is first advanced; errors before or during the
        stream are raised as `UpstreamError`. Close the iterator to release the connection.
        """
        url = f"{self._base}/models/{model}:streamGenerateContent"
        response = self._send(
            "POST", url, body, model, params={"alt": "sse"}, headers={"accept-encoding": "identity"}
        )
        try:
            if response.status_code != 200:
                raise error_from_response(response.status_code, response.content, model)
            for data in iter_event_data(_read_chunks(response, model, self._connection_failed)):
                if "error" in _parse_object(data, model):
                    raise error_from_response(_error_code(data), data, model)
                yield data
        finally:
            response.close()

    def _post_json(self, model: str, method: str, body: bytes) -> bytes:
        return self._request("POST", f"{self._base}/models/{model}:{method}", body, model)

    def _request(
        self,
        method: str,
        url: str,
        body: bytes | None,
        model: str | None,
        params: dict[str, str] | None = None,
    ) -> bytes:
        response = self._send(method, url, body, model, params=params)
        try:
            content = _read_all(response, model, self._connection_failed)
        finally:
            response.close()
        if response.status_code != 200:
            raise error_from_response(response.status_code, content, model)
        return content

    def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        model: str | None,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        deadline = current_deadline.get()
        timeout = deadline.timeout(*self._timeout) if deadline else self._timeout
        try:
            response = self._session.request(
                method,
                url,
                data=body,
                params=params,
                timeout=timeout,
                stream=True,
                headers=headers,
            )
        except requests.exceptions.ConnectTimeout:
            self._connection_failed()
            raise UpstreamUnavailable(
                503, "Upstream did not accept the connection.", model=model
            ) from None
        except requests.exceptions.ReadTimeout:
            self._connection_failed()
            raise UpstreamTimeout(model=model) from None
        except (requests.exceptions.RequestException, Urllib3HTTPError):
            self._connection_failed()
            raise UpstreamUnavailable(503, "Upstream connection failed.", model=model) from None
        if response.status_code < 500:
            self.health.success()
        retries = getattr(response.raw, "retries", None)
        if response.status_code == 200 and retries is not None and retries.history:
            events.retry_success(model or "-", len(retries.history))
        return response


def _read_chunks(
    response: requests.Response, model: str | None, on_error: Callable[[], None] | None = None
) -> Iterator[bytes]:
    """The body as it arrives (one read per network read, not per fixed-size block)."""
    raw = response.raw
    try:
        while chunk := raw.read1(_READ_SIZE):
            yield chunk
    except (OSError, Urllib3HTTPError, requests.exceptions.RequestException) as exc:
        if on_error is not None:
            on_error()
        if "timed out" in str(exc):
            raise UpstreamTimeout(model=model) from None
        raise UpstreamUnavailable(
            503, "Upstream connection broke during the response.", model=model
        ) from None


def _read_all(
    response: requests.Response, model: str | None, on_error: Callable[[], None] | None = None
) -> bytes:
    return b"".join(_read_chunks(response, model, on_error))


def _parse_object(raw: bytes, model: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise UpstreamMalformed(model=model) from None
    if not isinstance(value, dict):
        raise UpstreamMalformed(model=model)
    return value


def _error_code(data: bytes) -> int:
    try:
        code = json.loads(data)["error"]["code"]
        return int(code) if isinstance(code, int) else 500
    except (ValueError, KeyError, TypeError):
        return 500


def get_client() -> UpstreamClient:
    """The upstream client of the current app."""
    client: UpstreamClient = current_app.extensions["l104.upstream"]
    return client
