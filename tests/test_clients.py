"""The clients file: parsing with the line of each mistake, NODE_API_KEYS as clients, model
globs, hot reload with a bad edit kept out, and `python -m app.clients new-key`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from limits.storage import MemoryStorage, Storage

from app.clients.quotas import Quotas, Refusal, Window
from app.clients.registry import Client, ClientsFileError, Limits, key_hash, load, parse
from app.clients.source import ClientsSource
from app.clock import FakeClock
from app.upstream.key_pool import key_id

KEY = "reports-app-s3cr3t-key"
GOOD = f"""\
[defaults]
requests_per_minute = 600
tokens_per_minute = 1000000

[clients.reports-app]
key_sha256 = "{key_hash(KEY)}"
models = ["gemini-3.8-flash", "gemini-3.5-*"]
requests_per_minute = 120
tokens_per_minute = 200000
tokens_per_day = 5000000
max_in_flight = 20

[clients.batch_job]
key_sha256 = "{key_hash("batch-key").upper()}"
"""


def test_the_file_of_the_issue_parses() -> None:
    defaults, clients = parse(GOOD)
    assert defaults == Limits(requests_per_minute=600, tokens_per_minute=1_000_000)
    reports, batch = clients
    assert reports.id == "reports-app" and reports.key_sha256 == key_hash(KEY)
    assert reports.limits == Limits(120, 200_000, 5_000_000, 20)
    assert batch.limits == defaults  # sets none of its own
    assert batch.key_sha256 == key_hash("batch-key")  # hex in either case
    assert reports.may_use("gemini-3.8-flash") and reports.may_use("gemini-3.5-flash-lite")
    assert not reports.may_use("gemini-3.7-flash")
    assert batch.models is None and batch.may_use("anything")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[clients.a]\nkey_sha256 = 'abc'\n", "line 1 ([clients.a]): key_sha256 must be 64 hex"),
        (
            f"# clients\n\n[clients.a]\nkey_sha256 = '{'0' * 64}'\nmax_in_flight = 0\n",
            "line 3 ([clients.a]): max_in_flight must be a whole number >= 1",
        ),
        (
            f"[clients.a]\nkey_sha256 = '{'0' * 64}'\nrpm = 5\n",
            "line 1 ([clients.a]): unknown key(s) rpm",
        ),
        (
            f"[clients.a]\nkey_sha256 = '{'0' * 64}'\n[clients.b]\nkey_sha256 = '{'0' * 64}'\n",
            "line 3 ([clients.b]): the same key as client a",
        ),
        (
            f"[clients.'a b']\nkey_sha256 = '{'0' * 64}'\n",
            "a client id is letters, digits",
        ),
        (f"[clients.a]\nkey_sha256 = '{'0' * 64}'\nmodels = []\n", "models must be a non-empty"),
        ("[defaults]\ntokens_per_minute = 'many'\n", "line 1 ([defaults]): tokens_per_minute"),
        ("[client.a]\n", "unknown table(s) client"),
        ("[clients.a\n", "line 1"),  # TOML's own error, with its position
    ],
)
def test_each_mistake_is_named_with_its_line(text: str, message: str) -> None:
    with pytest.raises(ClientsFileError) as caught:
        parse(text, "clients.toml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("clients.toml")


def test_node_api_keys_are_clients_with_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(GOOD)
    clients = load(str(path), ("legacy-node-key", KEY))
    legacy = clients.find("legacy-node-key")
    assert legacy is not None and legacy.id == key_id("legacy-node-key")
    assert legacy.id.startswith("key-") and len(legacy.id) == 12
    assert legacy.limits == Limits(requests_per_minute=600, tokens_per_minute=1_000_000)
    found = clients.find(KEY)
    assert found is not None and found.id == "reports-app"  # a key in both: the file's
    assert clients.find("nobody") is None and clients.closed
    assert not load(None, ()).closed  # no file, no keys: an open node


def test_a_changed_file_is_read_again_and_a_bad_edit_kept_out(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(GOOD)
    source = ClientsSource(str(path), (), clock, interval=2.0)
    assert source.current().find("new-key") is None
    path.write_text(GOOD + f'\n[clients.new]\nkey_sha256 = "{key_hash("new-key")}"\n')
    os.utime(path, (1, 1))  # a new modification time, whatever the file system's resolution
    assert source.current().find("new-key") is None  # not looked at again before 2 s
    clock.advance(2.0)
    new = source.current().find("new-key")
    assert new is not None and new.id == "new"
    path.write_text(GOOD.replace("max_in_flight = 20", "max_in_flight = -1"))
    os.utime(path, (2, 2))
    clock.advance(2.0)
    with caplog.at_level("ERROR", logger="l104.clients"):
        kept = source.current()
    assert kept.find("new-key") is not None  # the clients before the bad edit stay
    assert any(r.getMessage() == "clients_file_rejected" for r in caplog.records)
    assert "max_in_flight" in caplog.records[-1].__dict__["reason"]


def test_new_key_prints_a_key_once_and_its_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.clients", "new-key", "reports-app"],
        capture_output=True,
        text=True,
        check=True,
    )
    key = done.stdout.split("shown only now): ", 1)[1].split()[0]
    table = done.stdout.split("add to the clients file:\n\n", 1)[1]
    _, (client,) = parse(table)
    assert client.id == "reports-app" and client.key_sha256 == key_hash(key)
    assert key not in table
    bad = subprocess.run(
        [sys.executable, "-m", "app.clients", "new-key", "no spaces"], capture_output=True
    )
    assert bad.returncode == 2


def _quota_client(**limits: int) -> Client:
    return Client("app-1", key_hash("k"), Limits(**limits))


def test_requests_per_minute_refused_until_the_next_utc_minute(clock: FakeClock) -> None:
    clock.advance(60 - clock.now() % 60)  # the start of a UTC minute
    quotas = Quotas(MemoryStorage(), MemoryStorage(), clock)
    client = _quota_client(requests_per_minute=2)
    assert quotas.admit(client) is None and quotas.admit(client) is None
    refusal = quotas.admit(client)
    assert refusal is not None and refusal.limit == "requests_per_minute"
    assert refusal.quota_id == "RequestsPerMinutePerClient" and refusal.retry_after == 60
    clock.advance(45)
    assert quotas.windows(client)["requests_per_minute"] == Window(2, 0, 15)
    clock.advance(15)
    assert quotas.admit(client) is None  # a new minute


def test_tokens_are_charged_after_and_refused_once_spent(clock: FakeClock) -> None:
    clock.advance(86400 - clock.now() % 86400)  # midnight UTC
    quotas = Quotas(MemoryStorage(), MemoryStorage(), clock)
    client = _quota_client(tokens_per_minute=100, tokens_per_day=250)
    assert quotas.admit(client) is None
    quotas.charge(client, 99)
    assert quotas.admit(client) is None  # 1 token left: the call may go
    quotas.charge(client, 30)  # it crossed the limit: charged in full
    assert quotas.windows(client)["tokens_per_minute"].remaining == 0
    refusal = quotas.admit(client)
    assert refusal is not None and refusal.quota_id == "TokensPerMinutePerClient"
    clock.advance(60)
    quotas.charge(client, 130)  # 259 today
    refusal = quotas.admit(client)
    assert refusal is not None and refusal.limit == "tokens_per_day"
    assert refusal.retry_after == 86400 - 60  # until the next UTC day
    quotas.reset(client)
    assert quotas.admit(client) is None


def test_a_client_without_limits_is_never_refused(clock: FakeClock) -> None:
    quotas = Quotas(MemoryStorage(), MemoryStorage(), clock)
    client = _quota_client()
    quotas.charge(client, 10**9)
    assert all(quotas.admit(client) is None for _ in range(100))
    assert quotas.windows(client) == {}


def test_healings_reset_clears_request_windows_and_keeps_token_budgets(clock: FakeClock) -> None:
    clock.advance(60 - clock.now() % 60)
    quotas = Quotas(MemoryStorage(), MemoryStorage(), clock)
    client = _quota_client(requests_per_minute=1, tokens_per_minute=10)
    assert quotas.admit(client) is None
    quotas.charge(client, 10)
    quotas.reset_requests()
    windows = quotas.windows(client)
    assert windows["requests_per_minute"].remaining == 1
    assert windows["tokens_per_minute"].remaining == 0  # a budget: it stays


def test_max_in_flight_slots_are_taken_and_given_back(clock: FakeClock) -> None:
    clock.advance(300 - clock.now() % 300 + 299)  # the last second of an in-flight window
    quotas = Quotas(MemoryStorage(), MemoryStorage(), clock)
    client = _quota_client(max_in_flight=2)
    first, second = quotas.enter(client), quotas.enter(client)
    assert isinstance(first, str) and isinstance(second, str)
    clock.advance(1)  # a new window: the calls of the last one still count
    refusal = quotas.enter(client)
    assert isinstance(refusal, Refusal) and refusal.quota_id == "ConcurrentCallsPerClient"
    assert quotas.in_flight(client) == 2
    quotas.leave(first)
    third = quotas.enter(client)
    assert isinstance(third, str) and quotas.in_flight(client) == 2
    clock.advance(600)  # a dead worker's slots are forgotten two windows later
    assert quotas.in_flight(client) == 0
    assert quotas.enter(_quota_client()) is None  # no such limit


def test_quotas_keep_counting_per_worker_while_redis_is_away(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    from limits.storage import storage_from_string

    from app.clients.fallback import FallbackStorage
    from tests.support.processes import free_port

    away = storage_from_string(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.05, socket_connect_timeout=0.05
    )
    assert isinstance(away, Storage)
    storage = FallbackStorage(away, clock)
    quotas = Quotas(storage, storage, clock)
    client = _quota_client(requests_per_minute=1, tokens_per_minute=5)
    with caplog.at_level("WARNING", logger="l104.clients"):
        assert quotas.admit(client) is None  # no error for the client
    assert any(r.getMessage() == "quota_storage_degraded" for r in caplog.records)
    assert quotas.admit(client) is not None  # still counted, in this worker
    quotas.charge(client, 5)
    assert quotas.windows(client)["tokens_per_minute"].remaining == 0
