"""Gemini's OpenAI-compatible surface under `/v1beta/openai/`: routes, bearer auth, the
models list and embeddings (chat completions are in `openai_chat`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from app.simulator import embeddings as emb
from app.simulator import methods as m
from app.simulator.errors import ApiError
from app.simulator.responses import count_words

PREFIX = "/v1beta/openai/"
# Gemini names this surface's API version so in its 404s.
API_VERSION = "v1main"
NO_CREDENTIALS_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
NO_CREDENTIALS_DETAILS: list[dict[str, Any]] = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "CREDENTIALS_MISSING",
        "domain": "googleapis.com",
    }
]


@dataclass(frozen=True)
class Route:
    """One endpoint of the surface: its api_method, HTTP method and the model in its path."""

    api_method: str
    http_method: str
    path_model: str | None = None


def route(path: str) -> Route | None:
    """The endpoint `path` (under PREFIX) names, or None."""
    rest = path.removeprefix(PREFIX)
    if rest == "chat/completions":
        return Route(m.CHAT, "POST")
    if rest == "embeddings":
        return Route(m.EMBEDDINGS, "POST")
    if rest == "models":
        return Route(m.OPENAI_LIST_MODELS, "GET")
    if rest.startswith("models/"):
        model = model_id(unquote(rest.removeprefix("models/")))
        if model and "/" not in model:
            return Route(m.OPENAI_GET_MODEL, "GET", model)
    return None


def model_id(name: str) -> str:
    """A model id without its optional `models/` prefix."""
    return name.removeprefix("models/")


def body_model(body: object) -> str | None:
    """The model a request body names (prefix stripped), if it names one."""
    model = body.get("model") if isinstance(body, dict) else None
    return model_id(model) if isinstance(model, str) else None


def bearer(header: str | None) -> tuple[str, str | None]:
    """(auth, key) from an `Authorization` header: ("bearer", KEY) or ("none", None)."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "bearer", token.strip()
    return "none", None


def model_entry(model: str) -> dict[str, Any]:
    """One model as the surface lists it."""
    return {"id": f"models/{model}", "object": "model", "created": 0, "owned_by": "google"}


def model_list(models: list[str]) -> dict[str, Any]:
    """The answer to `GET models`."""
    return {"object": "list", "data": [model_entry(model) for model in models]}


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A checked `POST embeddings` body."""

    texts: list[str]
    dimensions: int
    base64: bool


def embeddings_request(body: dict[str, Any]) -> EmbeddingsRequest:
    """Check a `POST embeddings` body (a 400 ApiError when it is invalid)."""
    given = body.get("input")
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts:
        raise ApiError(400, "input must be a non-empty string or a non-empty list of strings.")
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise ApiError(400, f"input[{index}] must be a non-empty string.")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, f'encoding_format must be "float" or "base64", got {encoding!r}.')
    size = emb.dimensions(body.get("dimensions"), "dimensions")
    return EmbeddingsRequest(texts, size, encoding == "base64")


def embeddings_response(model: str, request: EmbeddingsRequest) -> dict[str, Any]:
    """The answer to `POST embeddings`: the vectors native embedContent gives."""
    data: list[dict[str, Any]] = []
    for index, text in enumerate(request.texts):
        values = emb.vector(model, text, request.dimensions)
        encoded: list[float] | str = emb.to_base64(values) if request.base64 else values
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(count_words(text) for text in request.texts)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
