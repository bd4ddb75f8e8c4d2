"""L104 Node: a self-healing gateway in front of Google's Gemini API."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from app.version import __version__

if TYPE_CHECKING:
    from flask import Flask

    from app.clock import Clock
    from app.settings import Settings


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> Flask:
    """Build the node: settings, logging, errors, the self-healing parts, the blueprints."""
    # Imported here, as Flask's tutorial does, so that `import app.simulator` or the gunicorn
    # master's hooks stay light and prometheus_client is first imported inside a worker.
    from flask import Flask

    from app import errors, extensions
    from app.api import admin, legacy, node, ops
    from app.api import openai as openai_api
    from app.api.proxies import TrustedProxyFix
    from app.clock import SYSTEM_CLOCK
    from app.observability import logs, request_context
    from app.resilience import admission
    from app.settings import Settings
    from app.surfaces import OPENAI_PREFIXES

    settings = settings or Settings.from_env(os.environ)
    app = Flask(__name__)
    app.config.update(L104_SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_request_bytes)
    logs.init_app(app, settings)
    errors.init_app(app)
    request_context.init_app(app)
    extensions.init_app(app, settings, clock or SYSTEM_CLOCK)
    admission.init_app(app, settings.max_calls_in_flight)
    for blueprint in (node.bp, legacy.bp, ops.bp, admin.bp):
        app.register_blueprint(blueprint)
    for prefix in OPENAI_PREFIXES:  # Gemini's base path, and the alias for tools adding /v1
        name = "openai" if prefix == OPENAI_PREFIXES[0] else "openai_alias"
        app.register_blueprint(openai_api.bp, url_prefix=prefix, name=name)
    limiter = app.extensions["l104.limiter"]
    limiter.exempt(ops.bp)
    limiter.exempt(admin.bp)
    app.wsgi_app = TrustedProxyFix(app.wsgi_app, settings.trusted_proxies)  # type: ignore[method-assign]
    return app


__all__ = ["__version__", "create_app"]
