"""Admin endpoints under `/self/`: heal the node, see its state. Bearer ADMIN_TOKEN only."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request

from app.api import accounting
from app.api.bearer import bearer_matches
from app.api.client_auth import clients
from app.api.status import client_states, node_status
from app.errors import ApiError
from app.healing.healer import ALL_ACTIONS, LEVEL_ACTIONS, Healer
from app.observability.logs import log_event
from app.settings import Settings

bp = Blueprint("admin", __name__, url_prefix="/self")
log = logging.getLogger("l104.admin")
_TRUE = ("1", "true", "yes", "on")


@bp.before_request
def require_admin_token() -> None:
    """403 when no ADMIN_TOKEN is configured; 401 for a missing or wrong bearer token. The
    console's files hold no data: they are served to anyone (the page then asks for the
    token)."""
    if request.endpoint in CONSOLE_ENDPOINTS:
        return
    settings: Settings = current_app.config["L104_SETTINGS"]
    if not settings.admin_token:
        raise ApiError(403, "Admin endpoints are disabled. Set ADMIN_TOKEN to enable them.")
    header = request.headers.get("Authorization", "")
    if not bearer_matches(header, settings.admin_token):
        log_event(
            log,
            "admin_auth_failed",
            logging.WARNING,
            path=request.path,
            remote_addr=request.remote_addr,
            had_token=bool(header.partition(" ")[2].strip()),
        )
        raise ApiError(
            401,
            "Request had invalid authentication credentials. Send Authorization: Bearer "
            "<ADMIN_TOKEN>.",
            headers={"WWW-Authenticate": 'Bearer realm="l104-admin"'},
        )


def _chosen_actions() -> tuple[list[str], str]:
    """Actions picked by query flags (`?reset_http_client=true`), or a level's, or all."""
    level = request.args.get("level", "")
    if level and level not in LEVEL_ACTIONS:
        raise ApiError(400, f"level must be one of {', '.join(LEVEL_ACTIONS)}.")
    unknown = [k for k in request.args if k not in (*ALL_ACTIONS, "level")]
    if unknown:
        raise ApiError(400, f"Unknown heal option: {unknown[0][:64]}.")
    flags = [a for a in ALL_ACTIONS if request.args.get(a, "").lower() in _TRUE]
    if flags:
        return flags, "custom"
    if level:
        return list(LEVEL_ACTIONS[level]), level
    full = [a for a in ALL_ACTIONS if a != "recycle_workers"]
    return full, "full"


@bp.post("/heal")
def heal() -> Response:
    """Run a heal now, node-wide."""
    actions, level = _chosen_actions()
    healer: Healer = current_app.extensions["l104.healer"]
    result = healer.heal(actions, level=level, trigger="admin")
    response = jsonify(
        status="OK",
        actions=result["actions"],
        level=level,
        generation=result["generation"],
        timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
        pending=_pending(actions),
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _pending(actions: list[str]) -> dict[str, str]:
    """What this heal leaves running after its answer: every worker's own part."""
    pending = {}
    if "recycle_workers" in actions:
        pending["recycle_workers"] = (
            "started: every worker is replaced in turn, one at a time, each once the one "
            "before it has drained (see workers on /self/status)"
        )
    if "reset_http_client" in actions:
        pending["reset_http_client"] = "each worker replaces its client within a second"
    return pending


@bp.get("/status")
def status() -> Response:
    """The node's state (app.api.status.node_status), and what the console's buttons can ask."""
    response = jsonify(
        {**node_status(), "heal_levels": list(LEVEL_ACTIONS), "heal_actions": list(ALL_ACTIONS)}
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/clients")
def clients_view() -> Response:
    """Each client's limits, what it used this minute and today, and what is left (ids
    only: never a key or its hash)."""
    response = jsonify({"clients": client_states()})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/clients/<client_id>/reset")
def reset_client(client_id: str) -> Response:
    """Clear one client's current windows (its requests and tokens of this minute and day)."""
    client = clients().by_id().get(client_id)
    if client is None:
        raise ApiError(404, "No such client.")
    accounting.quotas().reset(client)
    log_event(log, "client_windows_reset", client=client.id)
    return jsonify({"client": client.id, "reset": True})


# The console: one page, its style and its script, all from the node (no CDN, no framework).
CONSOLE_DIR = Path(__file__).resolve().parent / "console"
CONSOLE_FILES = {
    "console.html": "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
CONSOLE_ENDPOINTS = frozenset({"admin.console", "admin.console_file", "admin.console_config"})
# No inline script or style, nothing from elsewhere, no framing, no forms posting anywhere.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@bp.get("/console")
def console() -> Response:
    """The operator console (holds no data; reads /self/status with the admin token)."""
    return _console_file("console.html")


@bp.get("/console/config")
def console_config() -> Response:
    """Whether the admin endpoints are on (the page says so before asking for a token)."""
    settings: Settings = current_app.config["L104_SETTINGS"]
    response = jsonify(admin_enabled=bool(settings.admin_token))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/console/<name>")
def console_file(name: str) -> Response:
    """The console's style and script."""
    if name not in CONSOLE_FILES or name == "console.html":
        raise ApiError(404, "No such console file.")
    return _console_file(name)


def _console_file(name: str) -> Response:
    response = Response((CONSOLE_DIR / name).read_bytes(), content_type=CONSOLE_FILES[name])
    response.headers.update(
        {
            "Content-Security-Policy": CONSOLE_CSP,
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }
    )
    return response
