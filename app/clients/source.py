"""The clients in force, re-read when the clients file changes.

Each worker looks at the file's modification time at most every `interval` seconds, on the
way to a call and from its periodic tick (a `stat`, nothing more), and reloads it when it
changed. A bad edit is logged
(`clients_file_rejected`) and the clients read before stay in force, as `nginx -s reload`
keeps its old configuration.
"""

from __future__ import annotations

import logging
import os
import threading

from app.clients.registry import Clients, ClientsFileError, load
from app.clock import SYSTEM_CLOCK, Clock
from app.observability.logs import log_event

log = logging.getLogger("l104.clients")


class ClientsSource:
    """The node's clients: CLIENTS_FILE (if set) and NODE_API_KEYS."""

    def __init__(
        self,
        path: str,
        node_api_keys: tuple[str, ...] = (),
        clock: Clock = SYSTEM_CLOCK,
        interval: float = 2.0,
    ) -> None:
        self.path = path
        self._node_api_keys = node_api_keys
        self._clock = clock
        self.interval = interval
        self._lock = threading.Lock()
        self._stamp = self._mtime()
        self._clients = load(path or None, node_api_keys)  # a bad file at start: raises
        self._checked = clock.monotonic()

    def current(self) -> Clients:
        """The clients in force now (reloaded first if the file changed)."""
        if self.path and self._clock.monotonic() - self._checked >= self.interval:
            self._maybe_reload()
        return self._clients

    def _mtime(self) -> tuple[float, int] | None:
        if not self.path:
            return None
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_mtime, stat.st_size

    def _maybe_reload(self) -> None:
        with self._lock:
            self._checked = self._clock.monotonic()
            stamp = self._mtime()
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                clients = load(self.path, self._node_api_keys)
            except (OSError, ClientsFileError) as error:
                log_event(log, "clients_file_rejected", logging.ERROR, reason=str(error))
                return
            self._clients = clients
            log_event(log, "clients_file_loaded", clients=len(clients.by_hash))
