"""What each client spent: the tokens the upstream reported for its calls, charged to its
token windows (`app.clients.quotas`) and counted by kind in metrics; refusals of a client's
limits in Gemini's shape (`QuotaFailure` and `RetryInfo`), and its limits as `x-ratelimit-*`
headers on every answer."""

from __future__ import annotations

import json
import math
from typing import Any

from flask import Response, current_app, g, request

from app.api.client_auth import current_client
from app.clients.quotas import Quotas, Refusal
from app.errors import ApiError
from app.observability import metrics
from app.resilience.gateway import retry_hint
from app.surfaces import GEMINI, current_api

# usageMetadata field -> the `kind` label of l104_client_tokens_total
TOKEN_KINDS = {
    "promptTokenCount": "prompt",
    "candidatesTokenCount": "candidates",
    "thoughtsTokenCount": "thoughts",
    "cachedContentTokenCount": "cached",
}
OPENAI_KINDS = {"prompt_tokens": "prompt", "completion_tokens": "candidates"}
# WSGI environ keys the access log reads (app.workers.access_log)
CLIENT_ENVIRON, TOKENS_ENVIRON = "l104.client", "l104.tokens"


def quotas() -> Quotas:
    """The node's client quotas."""
    found: Quotas = current_app.extensions["l104.quotas"]
    return found


def admit() -> None:
    """Count the identified client's request; 429 RESOURCE_EXHAUSTED if a limit is reached
    (a client's refusal: no breaker, cooldown, retry or heal moves)."""
    client = current_client()
    if client is None:
        return
    request.environ[CLIENT_ENVIRON] = client.id  # for the access log line
    found = quotas()
    refusal = found.admit(client)
    if refusal is None:
        slot = found.enter(client)
        if isinstance(slot, str):
            g.l104_client_slot = slot
        else:
            refusal = slot
    if refusal is not None:
        metrics.CLIENT_REFUSALS.labels(client.id, refusal.limit).inc()
        g.l104_fail_fast = True
        raise refused(refusal)


def leave(_error: BaseException | None = None) -> None:
    """Teardown: give the call's `max_in_flight` slot back (a stream's, when it ends)."""
    slot = g.pop("l104_client_slot", None)
    if slot is not None:
        quotas().leave(slot)


def refused(refusal: Refusal) -> ApiError:
    """Gemini's 429 for a client's limit, with the limit named and the window's end."""
    wait = max(1, math.ceil(refusal.retry_after))
    retry_info, headers = retry_hint(wait)
    return ApiError(
        429,
        f"Client {refusal.client} has reached its {refusal.limit} ({refusal.value}). "
        f"Retry in {wait}s.",
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": f"l104-node/{refusal.limit}",
                        "quotaId": refusal.quota_id,
                        "quotaDimensions": {"client": refusal.client},
                        "quotaValue": str(refusal.value),
                    }
                ],
            },
            *retry_info,
        ],
        headers=headers,
    )


def charge(model: str, answer: dict[str, Any] | None) -> None:
    """Charge the tokens an answer (or a stream's last event) reports to its client."""
    client = current_client()
    if client is None or not isinstance(answer, dict):
        return
    usage = answer.get("usageMetadata")
    kinds, total_field = TOKEN_KINDS, "totalTokenCount"
    if not isinstance(usage, dict):
        usage = answer.get("usage")
        kinds, total_field = OPENAI_KINDS, "total_tokens"
    if not isinstance(usage, dict):
        return
    label = metrics.model_label(model)
    for field, kind in kinds.items():
        count = usage.get(field)
        if isinstance(count, int) and count > 0:
            metrics.CLIENT_TOKENS.labels(client.id, label, kind).inc(count)
    total = usage.get(total_field)
    if isinstance(total, int):
        quotas().charge(client, total)
        request.environ[TOKENS_ENVIRON] = request.environ.get(TOKENS_ENVIRON, 0) + total


def charge_event(model: str, data: bytes | None) -> None:
    """`charge` from a stream event's JSON."""
    if data is None:
        return
    try:
        charge(model, json.loads(data))
    except ValueError:
        return


def rate_limit_headers(response: Response) -> Response:
    """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` of the identified client, on
    every answer (OpenAI's names; the token figures are of its per-minute window)."""
    client = current_client()
    if client is None:
        return response
    windows = quotas().windows(client)
    for name, suffix in (("requests_per_minute", "requests"), ("tokens_per_minute", "tokens")):
        window = windows.get(name)
        if window is not None:
            response.headers[f"x-ratelimit-limit-{suffix}"] = str(window.limit)
            response.headers[f"x-ratelimit-remaining-{suffix}"] = str(window.remaining)
            response.headers[f"x-ratelimit-reset-{suffix}"] = f"{window.reset:.0f}s"
    api = current_api.get() or GEMINI
    metrics.CLIENT_REQUESTS.labels(client.id, api, str(response.status_code)).inc()
    return response
