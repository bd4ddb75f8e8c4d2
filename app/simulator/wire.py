"""HTTP/1.1 plumbing for the simulator: request bodies, responses, chunked streams, resets."""

from __future__ import annotations

import re
import socket
import struct
import sys
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote_plus

from app.simulator.key_ids import key_id
from app.simulator.responses import error_body

JSON_TYPE = "application/json; charset=UTF-8"
MAX_BODY_BYTES = 10 * 1024 * 1024
_DIGITS = re.compile(r"[0-9]{1,19}")
_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")
_QUERY_KEY = re.compile(r"([?&;]key=)([^&;#\s'\"]*)", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` (a log line, a request line) with each `key=` query value replaced by its id."""
    return _QUERY_KEY.sub(lambda m: m.group(1) + key_id(unquote_plus(m.group(2))), text)


class BodyError(Exception):
    """The request body cannot be read; answer `code` and close the connection."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ClientGone(Exception):
    """The client closed the connection before sending its whole request."""


class WireHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 handler with Gemini-format errors and no per-request logging."""

    protocol_version = "HTTP/1.1"
    server_version = "L104-Gemini-Simulator"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are closed after this many seconds
    verbose = False
    responded = False
    _chunked = False

    def log_message(self, format: str, *args: Any) -> None:
        """Log only in verbose mode (per-request logging would slow the simulator down), and
        never a key: a `?key=` in the request line is logged as its id."""
        if self.verbose:
            super().log_message("%s", redact(format % args))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by the stdlib parser (bad request line, huge headers) as Gemini JSON."""
        self.close_connection = True
        try:
            phrase = self.responses[code][0] if code in self.responses else "Error"
            self.send_body(code, error_body(code, redact(message or phrase)))
        except OSError:
            pass

    def _head(self, code: int, headers: list[tuple[str, str]]) -> bytes:
        phrase = self.responses[code][0] if code in self.responses else "Status"
        lines = [
            f"{self.protocol_version} {code} {phrase}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
        ]
        lines.extend(f"{name}: {value}" for name, value in headers)
        if self.close_connection:
            lines.append("Connection: close")
        elif getattr(self, "request_version", "") == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1")

    def send_body(self, code: int, body: bytes, content_type: str = JSON_TYPE) -> None:
        """Send a complete response in one write (status, headers and body)."""
        length = str(len(body))
        head = self._head(code, [("Content-Type", content_type), ("Content-Length", length)])
        self.responded = True
        if getattr(self, "command", "") == "HEAD":
            body = b""
        self.wfile.write(head + body)
        self.log_request(code, len(body))

    def send_head_only(self, code: int, length: int, content_type: str = JSON_TYPE) -> None:
        """Send status and headers of a Content-Length response whose body follows later."""
        head = self._head(code, [("Content-Type", content_type), ("Content-Length", str(length))])
        self.responded = True
        self.wfile.write(head)
        self.log_request(code, length)

    def start_stream(self, code: int, content_type: str) -> None:
        """Start a streamed response: chunked for HTTP/1.1, until-close for HTTP/1.0."""
        self._chunked = self.request_version == "HTTP/1.1"
        if not self._chunked:
            self.close_connection = True
        headers = [("Content-Type", content_type)]
        if self._chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        self.responded = True
        self.wfile.write(self._head(code, headers))
        self.log_request(code)

    def write_chunk(self, data: bytes) -> None:
        """Send one piece of a streamed response at once."""
        if not data:
            return
        if self._chunked:
            self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.wfile.write(data)

    def end_stream(self) -> None:
        """Finish a streamed response."""
        if self._chunked:
            self.wfile.write(b"0\r\n\r\n")

    def abort(self) -> None:
        """Close the connection with a TCP RST, sending nothing more."""
        self.close_connection = True
        sock: socket.socket = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            sock.close()
        except OSError:
            pass

    def read_body(self) -> bytes | None:
        """The request body (None when the request has no framing for one).

        Raises BodyError for unusable framing or a body over MAX_BODY_BYTES, and ClientGone
        when the client stops sending.
        """
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise BodyError(400, f"Unsupported Transfer-Encoding: {encoding.strip()}.")
            return self._read_chunked()
        lengths = self.headers.get_all("Content-Length")
        if not lengths:
            return None
        values = {value.strip() for value in lengths}
        (value,) = values if len(values) == 1 else ("",)
        if not _DIGITS.fullmatch(value):
            raise BodyError(400, "Invalid Content-Length header.")
        length = int(value)
        if length > MAX_BODY_BYTES:
            raise BodyError(413, "Request payload size exceeds the limit: 10485760 bytes.")
        data = self.rfile.read(length) if length else b""
        if len(data) < length:
            raise ClientGone
        return data

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise ClientGone
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:
                raise BodyError(400, "Invalid chunked request body.")
            size = int(match.group(1), 16)
            if size == 0:
                break
            total += size
            if total > MAX_BODY_BYTES:
                raise BodyError(413, "Request payload size exceeds the limit: 10485760 bytes.")
            data = self.rfile.read(size)
            if len(data) < size:
                raise ClientGone
            parts.append(data)
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BodyError(400, "Invalid chunked request body.")
        for _ in range(100):  # trailer fields, up to the blank line
            line = self.rfile.readline(8192)
            if not line:
                raise ClientGone
            if line in (b"\r\n", b"\n"):
                return b"".join(parts)
        raise BodyError(400, "Too many trailer fields.")

    def report_bug(self, error: BaseException) -> None:
        """A handler bug: print it and answer 500 if nothing was sent yet."""
        import traceback

        traceback.print_exception(error, file=sys.stderr)
        self.close_connection = True
        if not self.responded:
            try:
                self.send_body(500, error_body(500, f"Simulator bug: {error!r}"))
            except OSError:
                pass
