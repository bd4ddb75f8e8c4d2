"""Waits that end early when the client closes its connection (hang, slow and stall faults)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Literal

# How the wait ended: its time ran out, the server is stopping, or the client went.
Outcome = Literal["elapsed", "stopped", "gone"]
# The longest the socket is waited on before `stopping` is checked again. A stopping server
# also shuts every connection down, which ends the wait at once; this is only a backstop.
_SLICE = 0.25


def wait_on_client(sock: socket.socket, seconds: float, stopping: threading.Event) -> Outcome:
    """Wait up to `seconds` for nothing but the client closing `sock` or the server stopping.

    The client of an unanswered call sends nothing more on its connection, so the socket
    becoming readable means EOF (it closed) or an error (it reset): peeking at one byte tells
    which without consuming anything. Works on plain and gevent sockets alike.
    """
    deadline = time.monotonic() + seconds
    previous = sock.gettimeout()
    try:
        while not stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return "elapsed"
            sock.settimeout(min(_SLICE, left))
            try:
                peeked = sock.recv(1, socket.MSG_PEEK)
            except TimeoutError:
                continue
            except OSError:
                peeked = b""
            if peeked:
                # It sent more (a pipelined request) and is still there; peeking again would
                # return at once, so wait out the rest without watching the socket.
                return "stopped" if stopping.wait(left) else "elapsed"
            return "stopped" if stopping.is_set() else "gone"
        return "stopped"
    finally:
        try:
            sock.settimeout(previous)
        except OSError:  # closed under us by a stopping server
            pass
