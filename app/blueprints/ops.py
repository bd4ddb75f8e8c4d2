"""Operations endpoints: `/health` (liveness)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, jsonify

from app.request_context import RequestCounter
from app.settings import Settings
from app.version import __version__

bp = Blueprint("ops", __name__)


@bp.get("/health")
def health() -> Response:
    """Liveness: the process answers; names the configured upstream."""
    settings: Settings = current_app.config["L104_SETTINGS"]
    counter: RequestCounter = current_app.extensions["l104.requests"]
    return jsonify(
        status="ok",
        timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
        uptime_seconds=round(time.monotonic() - counter.started, 3),
        requests_total=counter.total,
        upstream=settings.upstream_kind,
        upstream_base=settings.gemini_api_base,
        models=list(settings.gemini_models),
        version=__version__,
    )
