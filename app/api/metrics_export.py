"""What /metrics serves: the workers' metrics summed node-wide, plus the shared state.

Worker metrics come from prometheus_client's multiprocess files when PROMETHEUS_MULTIPROC_DIR
is set (under gunicorn), else from this process. Breaker states, cooldowns and build info are
read from the node-wide store at scrape time, so they are right whichever worker answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from app.resilience.breaker import BreakerBoard
from app.resilience.cooldowns import Cooldowns
from app.resilience.route_states import RouteStates
from app.state import StateStore
from app.upstream.key_pool import KeyPool
from app.version import __version__

BREAKER_STATES = ("closed", "open", "half-open")


class _ThisProcess(Collector):
    """The default registry's metrics (when not under gunicorn's multiprocess mode)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class StateCollector(Collector):
    """Node-wide state from the store: breakers, cooldowns, upstream keys, build info."""

    def __init__(
        self,
        store: StateStore,
        breakers: BreakerBoard,
        cooldowns: Cooldowns,
        models: tuple[str, ...],
        rotation: tuple[str, ...],
        pool: KeyPool,
    ) -> None:
        self._store = store
        self._breakers = breakers
        self._cooldowns = cooldowns
        self._models = models  # every served model, embedding models too
        self._rotation = rotation  # GEMINI_MODELS: whether the node can answer a generation
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        states = RouteStates(self._store, self._breakers, self._cooldowns, self._pool, self._models)
        state = GaugeMetricFamily(
            "l104_circuit_breaker_state",
            "1 for the state each model's breaker is in (its best upstream key's)",
            labels=["model", "state"],
        )
        failures = GaugeMetricFamily(
            "l104_circuit_breaker_failures",
            "Consecutive failures counted by each breaker",
            labels=["model"],
        )
        cooldown = GaugeMetricFamily(
            "l104_model_cooldown_seconds",
            "Seconds until a rate-limited model is used again",
            labels=["model"],
        )
        open_count = usable = 0
        for model in self._models:
            own = states.model(model)
            if model in self._rotation:
                open_count += own.circuit_state == "open"
                usable += own.usable
            for name in BREAKER_STATES:
                state.add_metric([model, name], 1.0 if own.circuit_state == name else 0.0)
            failures.add_metric([model], own.failures)
            cooldown.add_metric([model], own.cooldown_seconds)
        yield state
        yield failures
        yield cooldown
        yield GaugeMetricFamily(
            "l104_node_circuit_open",
            "1 when the breaker of every model of GEMINI_MODELS is open",
            value=1.0 if open_count == len(self._rotation) else 0.0,
        )
        yield GaugeMetricFamily(
            "l104_usable_models",
            "Models of GEMINI_MODELS neither open nor cooling down",
            value=float(usable),
        )
        yield from _key_families(states)
        info = GaugeMetricFamily("l104_build_info", "Version of the node", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info


def _key_families(states: RouteStates) -> Iterator[Metric]:
    """Each upstream key's state, node-wide, by key id (never the key)."""
    disabled = GaugeMetricFamily(
        "l104_upstream_key_disabled",
        "1 while Gemini refuses the upstream key (out of the pool until its next probe)",
        labels=["key"],
    )
    for key in states.keys.values():
        disabled.add_metric([key.id], 1.0 if key.disabled_seconds > 0 else 0.0)
    usable = GaugeMetricFamily(
        "l104_upstream_key_usable",
        "1 while a model can be called with the upstream key",
        labels=["key", "model"],
    )
    cooling = GaugeMetricFamily(
        "l104_upstream_key_cooldown_until_seconds",
        "When the model rests until on the upstream key (Unix time; 0: not resting)",
        labels=["key", "model"],
    )
    for model, routes in states.routes.items():
        for key_id in routes:
            entry = states.key_entry(model, key_id)
            usable.add_metric([key_id, model], 1.0 if entry["state"] == "usable" else 0.0)
            cooling.add_metric([key_id, model], entry["cooling_until"] or 0.0)
    yield disabled
    yield usable
    yield cooling


def scrape_registry(state: StateCollector) -> CollectorRegistry:
    """A registry for one scrape: all workers' metrics plus the shared state."""
    registry = _workers_registry()
    registry.register(state)
    return registry


def worker_families() -> list[Metric]:
    """All workers' own metrics, without reading the shared state (counters only)."""
    return list(_workers_registry().collect())


def _workers_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    return registry


def totals(families: Iterable[Metric]) -> dict[str, float]:
    """Each counter family's node-wide total (labels summed), by family name."""
    result: dict[str, float] = {}
    for family in families:
        if family.type != "counter":
            continue
        result[family.name] = sum(s.value for s in family.samples if s.name.endswith("_total"))
    return result


def totals_by(families: Iterable[Metric], name: str, label: str) -> dict[str, float]:
    """One counter family's node-wide totals by the values of `label`."""
    result: dict[str, float] = {}
    for family in families:
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = sample.labels.get(label, "")
                result[key] = result.get(key, 0.0) + sample.value
    return result


def gauge_value(families: Iterable[Metric], name: str, how: str = "sum") -> Any:
    """A gauge's node-wide value: the sum (or max) of its samples; None when absent."""
    values = [
        sample.value for family in families if family.name == name for sample in family.samples
    ]
    if not values:
        return None
    return max(values) if how == "max" else sum(values)
