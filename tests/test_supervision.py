"""gunicorn hooks (app.workers.supervision) without gunicorn: what post_request does per worker
class."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import gevent
import pytest
from gunicorn.workers.ggevent import GeventWorker
from gunicorn.workers.gthread import ThreadWorker

from app.settings import Settings
from app.workers.supervision import Supervisor, is_gevent_worker


class _Part:
    """Stands for the recycler and the heal watcher that post_worker_init starts."""

    def bind(self, worker: object) -> None:
        """The recycler's bind."""

    def start(self) -> None:
        """The heal watcher's start."""


def _worker(cls: type) -> Any:
    """An instance of a gunicorn worker class without running its __init__."""
    worker = cls.__new__(cls)
    worker.wsgi = SimpleNamespace(extensions=defaultdict(_Part))
    return worker


def test_gevent_workers_are_told_apart_from_the_others() -> None:
    assert is_gevent_worker(_worker(GeventWorker))
    assert not is_gevent_worker(_worker(ThreadWorker))


@pytest.mark.parametrize(("cls", "yields"), [(GeventWorker, 1), (ThreadWorker, 0)])
def test_post_request_yields_to_other_greenlets_only_under_gevent(
    monkeypatch: pytest.MonkeyPatch, cls: type, yields: int
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(gevent, "sleep", slept.append)
    supervisor = Supervisor(Settings(enable_watchdog=False))
    worker = _worker(cls)
    supervisor.post_worker_init(worker)
    supervisor.post_request(worker, None, {}, type("Resp", (), {"status_code": 200})())
    assert slept == [0] * yields
