"""Operations endpoints: `/health` (liveness), `/ready` (readiness) and `/metrics`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client.exposition import choose_encoder

from app.api import metrics_export, status
from app.api.bearer import bearer_matches
from app.errors import ApiError
from app.observability.request_context import RequestCounter
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


@bp.get("/ready")
def ready() -> tuple[Response, int]:
    """Readiness: 200 while some model can be used, 503 with the reasons otherwise."""
    routes = status.route_states()
    reasons = {
        model: reason
        for model, state in status.model_states(routes).items()
        if (reason := status.unusable_reason(state))
    }
    settings: Settings = current_app.config["L104_SETTINGS"]
    usable = [m for m in settings.gemini_models if m not in reasons]
    store = current_app.extensions["l104.state"]
    body = {
        "ready": bool(usable),
        "usable_models": usable,
        "unusable_models": reasons,
        # Gemini refuses every key: "key_refused" for every model above
        "usable_upstream_keys": len(routes.usable_keys()),
        "upstream_keys": len(routes.keys),
        # "redis", "local" (state in the node) or, while Redis is unreachable, "local".
        "state_backend": getattr(store, "backend", "local"),
        "state_shared": bool(settings.state_url),
    }
    return jsonify(body), 200 if usable else 503


def _check_metrics_token() -> None:
    settings: Settings = current_app.config["L104_SETTINGS"]
    if not settings.metrics_token:
        return
    if not bearer_matches(request.headers.get("Authorization", ""), settings.metrics_token):
        raise ApiError(
            401,
            "Send Authorization: Bearer <METRICS_TOKEN> to read metrics.",
            headers={"WWW-Authenticate": 'Bearer realm="l104-metrics"'},
        )


def _wants_json() -> bool:
    if request.args.get("format") == "json":
        return True
    best = request.accept_mimetypes.best_match(["text/plain", "application/json"])
    return best == "application/json"


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text (or OpenMetrics when asked), or the L104 JSON view."""
    _check_metrics_token()
    registry = metrics_export.scrape_registry(current_app.extensions["l104.state_collector"])
    if _wants_json():
        return jsonify(_json_view(list(registry.collect())))
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(registry), content_type=content_type)


def _json_view(families: list[Any]) -> dict[str, Any]:
    """The L104 design's metrics shape, node-wide, plus per-model detail."""
    settings: Settings = current_app.config["L104_SETTINGS"]
    totals = metrics_export.totals(families)
    models = status.model_states()
    last_reset = metrics_export.gauge_value(
        families, "l104_last_http_reset_timestamp_seconds", "max"
    )
    return {
        "self_healing": {
            "auto_heal_enabled": settings.auto_heal_enabled,
            "circuit_breaker_open": status.all_open(models),
            "circuit_breaker_failures": sum(m["failures"] for m in models.values()),
            "http_client_errors": int(
                metrics_export.gauge_value(families, "l104_http_client_errors") or 0
            ),
            "last_http_reset": last_reset or None,
        },
        "auto_heals": int(totals.get("l104_auto_heals", 0)),
        "circuit_breaks": int(totals.get("l104_circuit_breaks", 0)),
        "connection_resets": int(totals.get("l104_connection_resets", 0)),
        "retry_successes": int(totals.get("l104_retry_successes", 0)),
        # client requests by API: gemini (native), openai (OpenAI-compatible), legacy, node
        "requests": {
            api: int(count)
            for api, count in sorted(
                metrics_export.totals_by(families, "l104_requests", "api").items()
            )
        },
        "models": models,
    }
