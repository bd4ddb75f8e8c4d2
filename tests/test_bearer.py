"""Admin and metrics tokens: every probe costs one constant-time comparison with the whole
token, so timing reveals neither its length nor how much of a guess was right."""

from __future__ import annotations

import hmac

import pytest

from app.api import bearer
from app.api.bearer import bearer_matches

TOKEN = "admin-s3cr3t-token-0123456789"
PROBES = [
    "",
    "Bearer",
    "Bearer ",
    "Bearer x",
    f"Bearer {TOKEN[:1]}",
    f"Bearer {TOKEN[:-1]}",
    f"Bearer {TOKEN[:-1]}X",
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN * 4}",
    f"Basic {TOKEN}",
    f"bearer{TOKEN}",
]


def test_only_the_exact_bearer_token_matches() -> None:
    assert bearer_matches(f"Bearer {TOKEN}", TOKEN)
    assert bearer_matches(f"bearer   {TOKEN} ", TOKEN)
    for probe in PROBES:
        assert not bearer_matches(probe, TOKEN), probe


@pytest.mark.parametrize("probe", PROBES)
def test_every_probe_is_one_constant_time_comparison(
    probe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not `==`, no early return on a wrong scheme or an empty token before comparing."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(bearer.hmac, "compare_digest", recording)
    assert not bearer_matches(probe, TOKEN)
    assert len(compared) == 1 and compared[0][1] == TOKEN.encode()
