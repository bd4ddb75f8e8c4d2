"""Admin endpoints under `/self/`: heal the node, see its state. Bearer ADMIN_TOKEN only."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, jsonify, request

from app.bearer import bearer_matches
from app.errors import ApiError
from app.healing import ALL_ACTIONS, LEVEL_ACTIONS, Healer
from app.logs import log_event
from app.settings import Settings
from app.status import node_status

bp = Blueprint("admin", __name__, url_prefix="/self")
log = logging.getLogger("l104.admin")
_TRUE = ("1", "true", "yes", "on")


@bp.before_request
def require_admin_token() -> None:
    """403 when no ADMIN_TOKEN is configured; 401 for a missing or wrong bearer token."""
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
    return jsonify(
        status="OK",
        actions=result["actions"],
        level=level,
        generation=result["generation"],
        timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
    )


@bp.get("/status")
def status() -> Response:
    """Breakers, cooldowns, model error trackers and heal history."""
    return jsonify(node_status())
