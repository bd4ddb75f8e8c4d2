"""The upstream Gemini client: one requests.Session (`app.upstream.session`) behind a seam.

Everything that talks HTTP to Gemini goes through `UpstreamClient`; `reset()` swaps the one
session (and its connection pool) for a new one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Generator, Iterator, Mapping
from typing import Any

import requests
from flask import current_app
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import MaxRetryError, ReadTimeoutError

from app.clock import SYSTEM_CLOCK, Clock
from app.errors import (
    AttemptCancelled,
    UpstreamError,
    UpstreamMalformed,
    UpstreamStalled,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from app.observability import events, metrics
from app.settings import Settings
from app.upstream.assembly import assemble
from app.upstream.attempts import CANCELLED, STALLED, bytes_arrived, ended_reason
from app.upstream.backoff import Deadline
from app.upstream.errors import error_from_response
from app.upstream.key_pool import current_key
from app.upstream.retry_policy import current_deadline
from app.upstream.session import build_session, prepare
from app.upstream.sse import iter_event_data
from app.upstream.timeouts import DeadlineTimeout, fit_read_timeout

_READ_SIZE = 64 * 1024
_STREAM_HEADERS = {"accept-encoding": "identity"}
OPENAI_DONE = b"[DONE]"


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
        # Gemini's OpenAI-compatible API: under the same base, the key as a bearer token.
        self._openai = f"{settings.gemini_api_base}/openai"
        self._default_key = settings.upstream_keys[0]  # calls made outside the gateway
        self._timeout = settings.upstream_timeout
        self._stream_idle = settings.stream_idle_timeout
        self._unary_as_stream = settings.unary_as_stream
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
        """`models/{model}:generateContent`; returns the parsed and the raw answer. With
        UNARY_AS_STREAM, asked of Gemini as a stream and assembled (app.upstream.assembly)."""
        if self._unary_as_stream:
            events = [_parse_object(data, model) for data in self.stream(model, body)]
            parsed = assemble(events, model)
            return parsed, json.dumps(parsed, separators=(",", ":")).encode()
        raw = self._post_json(model, "generateContent", body)
        return _parse_object(raw, model), raw

    def embed(self, model: str, method: str, body: bytes) -> bytes:
        """`models/{model}:embedContent` or `:batchEmbedContents`; returns the raw answer."""
        return self._post_object(model, method, body)

    def openai_post(self, path: str, model: str, body: bytes) -> tuple[dict[str, Any], bytes]:
        """`POST openai/{path}` (chat/completions, embeddings); the parsed and raw answer."""
        url = f"{self._openai}/{path}"
        raw = self._request("POST", url, body, model)
        return _parse_object(raw, model), raw

    def openai_get(self, path: str, model: str | None) -> bytes:
        """`GET openai/{path}` (models, models/{id}); returns the raw answer."""
        url = f"{self._openai}/{path}"
        raw = self._request("GET", url, None, model)
        _parse_object(raw, model)
        return raw

    def openai_stream(self, model: str, body: bytes) -> Generator[bytes, None, None]:
        """`POST openai/chat/completions` with `stream: true`: each event's JSON payload as
        it arrives, up to `data: [DONE]` (not yielded). Errors as in `stream`."""
        url = f"{self._openai}/chat/completions"
        return self._events(url, body, model, None, _STREAM_HEADERS, until_done=True)

    def count_tokens(self, model: str, body: bytes) -> bytes:
        """`models/{model}:countTokens`; returns the raw answer."""
        return self._post_object(model, "countTokens", body)

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
        return self._events(url, body, model, {"alt": "sse"}, _STREAM_HEADERS)

    def _events(
        self,
        url: str,
        body: bytes,
        model: str,
        params: dict[str, str] | None,
        headers: Mapping[str, str | None],
        until_done: bool = False,
    ) -> Generator[bytes, None, None]:
        """The events of one upstream stream; `until_done`: it must end with [DONE]. A
        failure is raised with the id of the key the stream was opened with."""
        deadline = current_deadline.get()  # the stream, not just its start, ends by it
        key = current_key.get()  # the gateway's choice, while it opens the stream
        response = self._send("POST", url, body, model, params=params, headers=headers)
        try:
            if response.status_code != 200:
                raise error_from_response(response.status_code, response.content, model)
            chunks = self._read_chunks(response, model, deadline, idle=self._stream_idle)
            for data in iter_event_data(chunks):
                if data == OPENAI_DONE:
                    return
                if "error" in _parse_object(data, model):
                    raise error_from_response(_error_code(data), data, model)
                yield data
            if until_done:
                raise UpstreamUnavailable(503, "Upstream ended the stream early.", model=model)
        except UpstreamError as error:
            error.key_id = key.id if key is not None else None
            raise
        finally:
            response.close()

    def _read_chunks(
        self,
        response: requests.Response,
        model: str | None,
        deadline: Deadline | None,
        idle: float | None = None,
    ) -> Iterator[bytes]:
        """The body as it arrives (one read per network read, not per fixed-size block),
        each read bounded by the read timeout and the request's deadline; after the first
        chunk, by `idle` (a stream's STREAM_IDLE_TIMEOUT) when given."""
        raw = response.raw
        read_timeout = self._timeout[1]
        try:
            while True:
                fit_read_timeout(raw, read_timeout, deadline)
                chunk = raw.read1(_READ_SIZE)
                if not chunk:
                    _raise_if_ended(model)  # a shut socket reads as a clean end
                    return
                bytes_arrived(self._clock.monotonic())
                yield chunk
                if idle is not None:
                    read_timeout = idle
                if deadline is not None and deadline.expired():
                    raise UpstreamTimeout(model=model)
        except (OSError, Urllib3HTTPError, requests.exceptions.RequestException) as exc:
            _raise_if_ended(model)
            if deadline is None or not deadline.expired():
                self._connection_failed()  # the deadline running out says nothing of the link
            if "timed out" in str(exc):
                if idle is not None and read_timeout == idle:
                    raise UpstreamStalled(
                        "Upstream sent nothing for the stream idle timeout.", model=model
                    ) from None
                raise UpstreamTimeout(model=model) from None
            raise UpstreamUnavailable(
                503, "Upstream connection broke during the response.", model=model
            ) from None

    def _post_object(self, model: str, method: str, body: bytes) -> bytes:
        """`models/{model}:{method}` whose answer must be a JSON object; the raw answer."""
        raw = self._post_json(model, method, body)
        _parse_object(raw, model)
        return raw

    def _post_json(self, model: str, method: str, body: bytes) -> bytes:
        return self._request("POST", f"{self._base}/models/{model}:{method}", body, model)

    def _request(
        self,
        method: str,
        url: str,
        body: bytes | None,
        model: str | None,
        params: dict[str, str] | None = None,
        headers: Mapping[str, str | None] | None = None,
    ) -> bytes:
        deadline = current_deadline.get()
        response = self._send(method, url, body, model, params=params, headers=headers)
        try:
            content = b"".join(self._read_chunks(response, model, deadline))
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
        headers: Mapping[str, str | None] | None = None,
    ) -> requests.Response:
        deadline = current_deadline.get()
        headers = {**(headers or {}), **self._auth(url)}
        # Read again by urllib3 for every attempt, so that retries fit the deadline too.
        timeout = DeadlineTimeout(*self._timeout, deadline) if deadline else self._timeout
        try:
            session = self._session
            response = session.send(
                prepare(session, method, url, body, params, headers),
                timeout=timeout,  # type: ignore[arg-type]  # the adapter takes urllib3 Timeouts
                stream=True,
                allow_redirects=False,
                proxies=session.proxies,  # as read from the environment once (no re-reading)
                verify=session.verify,
            )
        except (requests.exceptions.RequestException, Urllib3HTTPError) as error:
            _raise_if_ended(model)  # the node closed it: says nothing of the link
            self._send_failed(error, model)
            raise  # not reached: _send_failed raises
        if response.status_code < 500:
            self.health.success()
        retries = getattr(response.raw, "retries", None)
        if response.status_code == 200 and retries is not None and retries.history:
            events.retry_success(model or "-", len(retries.history))
        return response

    def _send_failed(self, error: Exception, model: str | None) -> None:
        """Map a failed send to an UpstreamError, counting it against the client's health."""
        self._connection_failed()
        if isinstance(error, requests.exceptions.ConnectTimeout):
            raise UpstreamUnavailable(
                503, "Upstream did not accept the connection.", model=model
            ) from None
        if isinstance(error, requests.exceptions.ReadTimeout) or _timed_out(error):
            raise UpstreamTimeout(model=model) from None  # (the last of several attempts)
        raise UpstreamUnavailable(503, "Upstream connection failed.", model=model) from None

    def _auth(self, url: str) -> dict[str, str | None]:
        """The key of this call (the gateway's choice from the pool): `x-goog-api-key`, or
        a bearer token on the OpenAI-compatible API."""
        key = current_key.get()
        secret = key.secret if key is not None else self._default_key
        if url.startswith(self._openai):
            return {"authorization": f"Bearer {secret}", "x-goog-api-key": None}
        return {"x-goog-api-key": secret}


def _raise_if_ended(model: str | None) -> None:
    """The attempt was ended by the node (a hedge won, or the stall timer fired): say so."""
    reason = ended_reason()
    if reason == STALLED:
        raise UpstreamStalled(model=model) from None
    if reason == CANCELLED:
        raise AttemptCancelled(model=model) from None


def _timed_out(error: Exception) -> bool:
    """True for requests' wrapping of urllib3's "retries are over, the last read timed out"."""
    cause = error.args[0] if error.args else None
    return isinstance(cause, MaxRetryError) and isinstance(cause.reason, ReadTimeoutError)


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
