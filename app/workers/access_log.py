"""gunicorn's logger with a cheaper access log.

gunicorn's `Logger.access()` builds its whole atom table (every request and response header,
every environ variable, a formatted date) for each request, even when the access logger
would drop the line. This one returns at once when access logging is off and otherwise
collects only the fields `app.observability.logs.access_entry` writes.
"""

from __future__ import annotations

import logging
import traceback
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger


class AccessLogger(Logger):  # type: ignore[misc]  # Logger is Any: gunicorn is untyped
    """`logger_class` for gunicorn.conf.py."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        """Log one access line (JSON via app.observability.logs) if the access logger takes INFO."""
        if not self.access_log.isEnabledFor(logging.INFO):
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        request_id = hedged = "-"
        for name, value in resp.headers:
            lowered = name.lower()
            if lowered == "x-request-id":
                request_id = value
            elif lowered == "x-l104-hedged":
                hedged = value
        atoms = {
            "h": environ.get("REMOTE_ADDR", "-"),
            "m": environ.get("REQUEST_METHOD"),
            "U": environ.get("PATH_INFO"),
            "s": status,
            "B": getattr(resp, "sent", None),
            "M": request_time.seconds * 1000 + request_time.microseconds // 1000,
            "a": environ.get("HTTP_USER_AGENT", "-"),
            "{x-request-id}o": request_id,
            "{x-l104-hedged}o": hedged,
            "{l104.client}e": environ.get("l104.client"),
            "{l104.tokens}e": environ.get("l104.tokens"),
        }
        try:
            self.access_log.info("access", atoms)
        except Exception:
            self.error(traceback.format_exc())
