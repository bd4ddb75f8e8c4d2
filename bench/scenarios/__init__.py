"""The scenarios, by name, in the order `python -m bench` runs them."""

from __future__ import annotations

from collections.abc import Callable

from bench.scenarios.capacity import capacity
from bench.scenarios.common import Context
from bench.scenarios.faults import fail_fast, failover, streaming
from bench.scenarios.healing import recovery, recycle
from bench.scenarios.instructions import cpu_cost
from bench.scenarios.keys import key_failover
from bench.scenarios.latency import overhead, throughput
from bench.scenarios.memory import memory
from bench.scenarios.state import state_backend
from bench.scenarios.tail import tail

Scenario = Callable[[Context], None]

SCENARIOS: dict[str, Scenario] = {
    "overhead": overhead,
    "throughput": throughput,
    "capacity": capacity,
    "fail-fast": fail_fast,
    "failover": failover,
    "key-failover": key_failover,
    "streaming": streaming,
    "tail": tail,
    "recovery": recovery,
    "recycle": recycle,
    "memory": memory,
    "state-backend": state_backend,
    "cpu-cost": cpu_cost,
}
