"""L104 Node: a self-healing gateway in front of Google's Gemini API."""

from __future__ import annotations

import os

from flask import Flask

from app import errors, logs, request_context, resilience
from app.blueprints import admin, legacy, node, ops
from app.clock import SYSTEM_CLOCK, Clock
from app.proxies import TrustedProxyFix
from app.settings import Settings
from app.version import __version__


def create_app(settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK) -> Flask:
    """Build the node: settings, logging, errors, the self-healing parts, the blueprints."""
    settings = settings or Settings.from_env(os.environ)
    app = Flask(__name__)
    app.config.update(L104_SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_request_bytes)
    logs.init_app(app, settings)
    errors.init_app(app)
    request_context.init_app(app)
    resilience.init_app(app, settings, clock)
    for blueprint in (node.bp, legacy.bp, ops.bp, admin.bp):
        app.register_blueprint(blueprint)
    limiter = app.extensions["l104.limiter"]
    limiter.exempt(ops.bp)
    limiter.exempt(admin.bp)
    app.wsgi_app = TrustedProxyFix(app.wsgi_app, settings.trusted_proxies)  # type: ignore[method-assign]
    return app


__all__ = ["Settings", "__version__", "create_app"]
