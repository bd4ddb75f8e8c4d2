"""The request handler: routes of the native Gemini API and of its OpenAI-compatible
surface, and how keys, quotas and faults shape the answers."""

from __future__ import annotations

import json
import re
import time
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl, unquote

from app.simulator import embeddings as emb
from app.simulator import methods as m
from app.simulator import openai_chat as chat
from app.simulator import openai_compat as oa
from app.simulator import responses as r
from app.simulator.control import handle_control
from app.simulator.errors import ApiError
from app.simulator.fault_errors import fault_error, key_fault_error
from app.simulator.faults import CALL_FAULTS, KEY_FAULTS, MAX_HANG_SECONDS, Fault
from app.simulator.frames import CONTENT_TYPES, END, MALFORMED, Framing, StampedFrames, frames
from app.simulator.keys import Credentials, credentials
from app.simulator.state import SimulatorState
from app.simulator.waits import wait_on_client
from app.simulator.wire import JSON_TYPE, BodyError, ClientGone, WireHandler

_API_PATH = re.compile(r"/(v1|v1beta)/models(?:/([^/:]+)(?::([^/:]+))?)?")
# The native method whose support a wrong-kind OpenAI call is refused for.
_OPENAI_NATIVE = {m.CHAT: "generateContent", m.EMBEDDINGS: "embedContent"}
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class _HasState(Protocol):
    state: SimulatorState


def _json(raw: bytes | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _require_object(body: object, raw: bytes | None) -> dict[str, Any]:
    if not isinstance(body, dict):
        reason = "Empty body." if not raw else "Expected a JSON object."
        raise ApiError(400, f"Invalid JSON payload received. {reason}")
    return body


class _Answered(Exception):
    """A fault was the whole answer (a reset, a hang, a client gone): nothing more to send."""


class SimulatorHandler(WireHandler):
    """One connection to the simulator; each request goes to `_handle`."""

    state: SimulatorState
    openai = False  # the request is for the OpenAI-compatible surface (errors are arrays)
    caller = credentials("none", None)  # the credentials of the request being answered
    fault_kind: str | None = None  # the fault that hit the request being answered

    def setup(self) -> None:
        """Bind the shared state once per connection."""
        super().setup()
        self.state = cast(_HasState, self.server).state
        self.verbose = self.state.verbose

    def do_GET(self) -> None:
        """Route a GET."""
        self._handle()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_OPTIONS = do_HEAD = do_GET

    def _handle(self) -> None:
        self.responded = False
        self.fault_kind = None
        path, _, query_text = self.path.partition("?")
        self.openai = path.startswith(oa.PREFIX)
        query = dict(parse_qsl(query_text, keep_blank_values=True)) if query_text else {}
        try:
            self._route(path, query)
        except OSError as error:  # the client went away mid-answer (an error answer too)
            self.close_connection = True
            # A stopping server shuts connections itself; a write timeout is a client that
            # stopped reading, not one that left.
            went = not isinstance(error, TimeoutError) and not self.state.stopping.is_set()
            if went and not path.startswith("/_sim/"):
                self.state.recorder.closed_by_client(self.fault_kind)

    def _route(self, path: str, query: dict[str, str]) -> None:
        try:
            try:
                raw = self.read_body()
            except BodyError as error:
                self.close_connection = True
                if not path.startswith("/_sim/"):
                    self._record(path, query, None, None, None)
                self._send_error(ApiError(error.code, error.message))
                return
            except OSError:  # not a call being answered yet: not counted as closed by it
                raise ClientGone from None
            if path.startswith("/_sim/"):
                code, body = handle_control(self.state, self.command, path, query, raw)
                self.send_body(code, body)
            else:
                self.state.recorder.call_started()
                try:
                    api = self._openai if self.openai else self._native
                    api(path, query, raw, _json(raw))
                finally:
                    self.state.recorder.call_ended()
        except (ClientGone, _Answered):
            self.close_connection = True
        except ApiError as error:
            self._send_error(error)
        except OSError:
            raise  # for `_handle`: not a bug
        except Exception as error:  # never let a request take the server down
            self.report_bug(error)

    def _send_error(self, error: ApiError) -> None:
        """The one place an error becomes a body: native, or in an array for OpenAI."""
        form = r.error_array_body if self.openai else r.error_body
        self.send_body(error.code, form(error.code, error.message, details=error.details))

    def _credentials(self, query: dict[str, str]) -> Credentials:
        if self.openai:
            return credentials(*oa.bearer(self.headers.get("Authorization")))
        key = self.headers.get("x-goog-api-key")
        if key is not None:
            return credentials("header", key)
        return credentials("query", query["key"]) if "key" in query else credentials("none", None)

    def _record(
        self,
        path: str,
        query: dict[str, str],
        model: str | None,
        api_method: str | None,
        body: object,
    ) -> None:
        self.caller = caller = self._credentials(query)
        self.state.recorder.record(
            {
                "method": self.command,
                "path": path,
                "query": query,
                "model": model,
                "api_method": api_method,
                "auth": caller.auth,
                "api_key": caller.key,
                "key_id": caller.key_id,
                "body": body,
                "user_agent": self.headers.get("User-Agent"),
            }
        )

    def _begin(
        self, path: str, query: dict[str, str], model: str | None, api_method: str | None, body: Any
    ) -> None:
        """Record the call (and its credentials) and wait the configured latency."""
        self._record(path, query, model, api_method, body)
        latency = self.state.config.snapshot()["latency_ms"]
        if latency:
            self.state.stopping.wait(latency / 1000)

    def _native(self, path: str, query: dict[str, str], raw: bytes | None, body: Any) -> None:
        match = _API_PATH.fullmatch(path)
        version, model, method = match.groups() if match else (None, None, None)
        model = unquote(model) if model else None
        if model is None:
            api_method = "listModels" if match else None
        elif method is None:
            api_method = "getModel"
        else:
            api_method = method if method in m.NATIVE_MODEL_METHODS else None
        self._begin(path, query, model, api_method, body)
        if api_method is None or version is None:
            raise ApiError(404, f"Method not found: {self.command} {path}.")
        wanted = "POST" if api_method in m.NATIVE_MODEL_METHODS else "GET"
        if self.command != wanted:
            raise ApiError(405, f"{api_method} accepts only {wanted}.")
        self._check_key(model, api_method)
        if api_method == "listModels":
            self.send_body(200, self._model_page(query))
            return
        assert model is not None
        embedding = r.is_embedding_model(model)
        if model not in self.state.model_set or (
            api_method in m.EMBEDDING_METHODS and not embedding
        ):
            named = api_method if api_method in m.EMBEDDING_METHODS else "generateContent"
            raise ApiError(404, r.not_found_model(model, version, named))
        if api_method in m.GENERATION_METHODS and embedding:
            raise ApiError(400, r.unsupported_method(model, api_method))
        fault = self._fault(model, api_method, api_method == "streamGenerateContent")
        if api_method == "getModel":
            self._send(r.compact(r.model_object(model)), fault)
            return
        request = _require_object(body, raw)
        if api_method == "countTokens":
            self._send(r.compact({"totalTokens": r.count_tokens(request)}), fault)
        elif api_method == "embedContent":
            self._send(r.compact(emb.embed_response(model, request)), fault)
        elif api_method == "batchEmbedContents":
            self._send(r.compact(emb.batch_response(model, request)), fault)
        else:
            text = r.reply_text(request)
            prompt = r.prompt_tokens(request)
            if api_method == "generateContent":
                reply = r.generate_response(text, prompt, model, r.response_id())
                self._send(r.compact(reply), fault)
                return
            pieces = self.state.config.snapshot()["stream_chunks"]
            chunks = r.stream_chunks(text, pieces, prompt, model, r.response_id())
            self._stream(chunks, "sse" if query.get("alt") == "sse" else "array", fault)

    def _openai(self, path: str, query: dict[str, str], raw: bytes | None, body: Any) -> None:
        found = oa.route(path)
        api_method = found.api_method if found else None
        model = found.path_model if found else None
        if api_method in _OPENAI_NATIVE:
            model = oa.body_model(body)
        self._begin(path, query, model, api_method, body)
        if found is None:
            raise ApiError(404, f"Method not found: {self.command} {path}.")
        if self.command != found.http_method:
            raise ApiError(405, f"{path} accepts only {found.http_method}.")
        self._check_key(model, found.api_method)
        if found.api_method == m.OPENAI_LIST_MODELS:
            self.send_body(200, r.compact(oa.model_list(self.state.models)))
            return
        request = _require_object(body, raw) if found.api_method in _OPENAI_NATIVE else {}
        if not model:
            raise ApiError(400, "model is required: a model id, with or without models/.")
        native = _OPENAI_NATIVE.get(found.api_method, "generateContent")
        if model not in self.state.model_set:
            raise ApiError(404, r.not_found_model(model, oa.API_VERSION, native))
        wants_embedding = found.api_method == m.EMBEDDINGS
        if found.api_method in _OPENAI_NATIVE and r.is_embedding_model(model) != wants_embedding:
            raise ApiError(400, r.unsupported_method(model, native))
        if found.api_method == m.OPENAI_GET_MODEL:
            fault = self._fault(model, found.api_method, streaming=False)
            self._send(r.compact(oa.model_entry(model)), fault)
        elif found.api_method == m.EMBEDDINGS:
            embeddings = oa.embeddings_request(request)
            fault = self._fault(model, found.api_method, streaming=False)
            self._send(r.compact(oa.embeddings_response(model, embeddings)), fault)
        else:
            completion = chat.chat_request(request)
            fault = self._fault(model, found.api_method, completion.stream)
            cid, created = chat.completion_id(), int(time.time())
            if not completion.stream:
                self._send(r.compact(chat.completion(completion, model, cid, created)), fault)
                return
            pieces = self.state.config.snapshot()["stream_chunks"]
            self._stream(chat.chunks(completion, model, pieces, cid, created), "openai", fault)

    def _check_key(self, model: str | None, api_method: str) -> None:
        """Refuse a call whose key is missing or unknown, or has a key fault."""
        self.state.keys.check(self.caller, self.openai)
        kid = self.caller.key_id
        fault = self.state.faults.take(model, api_method, kid, only=KEY_FAULTS)
        if fault is not None:
            self.state.recorder.fault_served()
            raise key_fault_error(fault, kid)

    def _model_page(self, query: dict[str, str]) -> bytes:
        try:
            size = int(query.get("pageSize") or DEFAULT_PAGE_SIZE)
            start = int(query.get("pageToken") or "0", 16)
        except ValueError:
            raise ApiError(400, "Invalid pageSize or pageToken.") from None
        if size < 0 or start < 0 or start > len(self.state.models):
            raise ApiError(400, "Invalid pageSize or pageToken.")
        size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        page: r.JsonObject = {
            "models": [r.model_object(name) for name in self.state.models[start : start + size]]
        }
        if start + size < len(self.state.models):
            page["nextPageToken"] = f"{start + size:x}"
        return r.compact(page)

    def _fault(self, model: str, api_method: str, streaming: bool) -> Fault | None:
        """Count the call against its key's quota, then apply the part of its fault that
        comes before any answer, and return the fault.

        Raises ApiError for a quota refusal or an error fault, _Answered for a reset, a hang
        (a stall on a call that is not a stream) or a slow call whose client went.
        """
        kid = self.caller.key_id
        self.state.quotas.charge(kid, model, api_method, self.state.clock.now())
        # Key faults had their turn in `_check_key` (a rate counts each call once).
        fault = self.state.faults.take(model, api_method, kid, only=CALL_FAULTS)
        if fault is None:
            return None
        self.state.recorder.fault_served()
        self.fault_kind = fault.kind
        error = fault_error(fault, model, kid)
        if error is not None:
            raise error
        kind = fault.kind
        if kind == "reset" or (kind == "stream_cut" and not streaming):
            self.abort()
            raise _Answered
        if kind == "hang" or (kind == "stall" and not streaming):
            self._hold(fault.params.get("seconds"))  # then close without an answer
            raise _Answered
        if kind == "slow" and not self._hold(fault.params["seconds"]):
            raise _Answered
        if kind == "latency":
            self.state.stopping.wait(fault.params["ms"] / 1000)
        return fault

    def _hold(self, seconds: float | None) -> bool:
        """Send nothing for `seconds` (None: until the client closes); whether that time
        passed. A client closing first is counted, and the connection is then closed."""
        limit = MAX_HANG_SECONDS if seconds is None else seconds
        outcome = wait_on_client(self.connection, limit, self.state.stopping)
        if outcome == "gone":
            self.state.recorder.closed_by_client(self.fault_kind)
        if outcome != "elapsed":
            self.close_connection = True
        return outcome == "elapsed"

    def _send(self, body: bytes, fault: Fault | None, content_type: str = JSON_TYPE) -> None:
        """A 200 answer, reshaped by a `slow_body` or `malformed` fault."""
        kind = fault.kind if fault else None
        if kind == "malformed":
            body = body[: len(body) // 2]  # the first half of a JSON object never parses
        if kind == "slow_body":
            assert fault is not None
            self._send_slowly(body, fault.params["ms"] / 1000, content_type)
        else:
            self.send_body(200, body, content_type)

    def _send_slowly(self, body: bytes, seconds: float, content_type: str) -> None:
        self.send_head_only(200, len(body), content_type)
        step = max(8, -(-len(body) // 50))
        pieces = [body[i : i + step] for i in range(0, len(body), step)]
        pause = seconds / max(1, len(pieces))
        for piece in pieces:
            if self.state.stopping.wait(pause):
                self.close_connection = True
                return
            self.wfile.write(piece)

    def _stream(self, chunks: list[r.JsonObject], framing: Framing, fault: Fault | None) -> None:
        """A streamed answer: SSE events (native or OpenAI) or one incrementally sent array."""
        sent: list[bytes] | StampedFrames = list(frames(chunks, framing))
        end = END[framing]
        kind = fault.kind if fault else None
        if kind == "malformed":
            sent, end = [MALFORMED[framing]], b""
        if kind == "slow_body":
            assert fault is not None
            body = b"".join(sent) + end
            self._send_slowly(body, fault.params["ms"] / 1000, CONTENT_TYPES[framing])
            return
        cut = fault.params["after"] if fault is not None and kind == "stream_cut" else None
        stall = fault.params["after"] if fault is not None and kind == "stall" else None
        limit = cut if stall is None else stall
        config = self.state.config.snapshot()
        delay = config["chunk_delay_ms"] / 1000
        if config["stamp_chunks"] and kind != "malformed":
            sent = StampedFrames(chunks, framing)
        self.start_stream(200, CONTENT_TYPES[framing])
        # The pause comes before the next frame is taken: a stamped frame is stamped after it.
        for index, frame in enumerate(sent):
            if limit is not None and index >= limit:
                break
            self.write_chunk(frame)
            more = index + 1 < len(sent)
            if more and delay and self.state.stopping.wait(delay):
                self.close_connection = True
                return
        if limit is None:
            self.write_chunk(end)
            self.end_stream()
            return
        if stall is not None:  # the stream goes silent, open, until the client gives up
            self._hold(None)
        self.close_connection = True
