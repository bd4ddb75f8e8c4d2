"""Reading the JSON log lines a node wrote."""

from __future__ import annotations

import json
from typing import Any

from tests.support.processes import Service


def events(service: Service, name: str | None = None) -> list[dict[str, Any]]:
    """Every JSON log line of `service` (those whose `event` is `name`, if given)."""
    found = []
    for line in service.log_text().splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if name is None or entry.get("event") == name:
            found.append(entry)
    return found
