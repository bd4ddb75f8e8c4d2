"""Bearer tokens for the admin and metrics endpoints, compared in constant time."""

from __future__ import annotations

import hmac


def bearer_matches(authorization: str, expected: str) -> bool:
    """True when an `Authorization` header is `Bearer <expected>`.

    The comparison takes as long for a token that shares a long prefix with `expected` as for
    one that shares none (`hmac.compare_digest`), so response times reveal nothing of it.
    """
    scheme, _, token = authorization.partition(" ")
    matched = hmac.compare_digest(token.strip().encode(), expected.encode())
    return matched and scheme.lower() == "bearer"
