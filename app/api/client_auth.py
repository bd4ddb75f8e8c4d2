"""Client authentication: the node's clients (CLIENTS_FILE and NODE_API_KEYS, see
`app.clients`), recognised on every surface; the client's key is never sent upstream."""

from __future__ import annotations

from flask import current_app, g, request

from app.clients.registry import Client, Clients
from app.clients.source import ClientsSource
from app.errors import ApiError
from app.resilience.gateway import ModelScope, current_scope

API_KEY_INVALID = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "l104-node",
    }
]


def presented_key() -> str | None:
    """The key the client sent as `x-goog-api-key` or `?key=`, if any."""
    return request.headers.get("x-goog-api-key") or request.args.get("key")


def clients() -> Clients:
    """The clients in force (re-read when the clients file changed)."""
    source: ClientsSource = current_app.extensions["l104.clients"]
    return source.current()


def current_client() -> Client | None:
    """The client of this request (None on an open node)."""
    client: Client | None = g.get("l104_client")
    return client


def require_client_key() -> None:
    """Blueprint guard: answers like Gemini (403 without a key, 400 with a wrong one)."""
    known = clients()
    g.l104_client = None
    current_scope.set(None)
    if not known.closed:
        return
    key = presented_key()
    if not key:
        raise ApiError(
            403,
            "Method doesn't allow unregistered callers. Send a node API key as "
            "x-goog-api-key or ?key=.",
        )
    client = known.find(key)
    if client is None:
        raise ApiError(
            400, "API key not valid. Please pass a valid API key.", details=API_KEY_INVALID
        )
    _identified(client)


def require_bearer_key() -> None:
    """The OpenAI-compatible guard: `Authorization: Bearer <key>` (never forwarded)."""
    known = clients()
    g.l104_client = None
    current_scope.set(None)
    if not known.closed:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "Send a node API key as Authorization: Bearer <key>.")
    client = known.find(token)
    if client is None:
        raise ApiError(401, "Incorrect API key provided.")
    _identified(client)


def _identified(client: Client) -> None:
    g.l104_client = client
    if client.models is not None:
        current_scope.set(ModelScope(client.id, client.may_use))
