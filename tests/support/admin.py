"""Calling a node's admin endpoints from tests."""

from __future__ import annotations

from typing import Any

import requests

from tests.support.processes import Service


def heal(node: Service, token: str, **actions: str) -> dict[str, Any]:
    """`POST /self/heal` with `actions` as query flags (`reset_keys="true"`, ...)."""
    response = requests.post(
        f"{node.url}/self/heal",
        params=actions,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def status(node: Service, token: str) -> dict[str, Any]:
    """`GET /self/status`."""
    response = requests.get(
        f"{node.url}/self/status", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result
