"""The clients file: who may call, with which models and limits (CLIENTS_FILE, TOML).

```toml
[defaults]                  # limits of every client that sets none of its own
requests_per_minute = 600
tokens_per_minute = 1000000

[clients.reports-app]
key_sha256 = "<SHA-256 of the client's key, 64 hex digits>"
models = ["gemini-3.8-flash", "gemini-3.5-*"]   # globs; default: every model served
requests_per_minute = 120
tokens_per_minute = 200000
tokens_per_day = 5000000    # a UTC day
max_in_flight = 20          # calls at once, node-wide
```

The file holds no secret, only hashes; a client is found by the SHA-256 of the key it
presents. Each NODE_API_KEYS key is a client too, named `key-<8 hex>` like upstream keys,
with the `[defaults]` limits; a key in both is the file's client.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.upstream.key_pool import key_id

LIMITS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day", "max_in_flight")
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CLIENT_KEYS = frozenset({"key_sha256", "models", *LIMITS})


class ClientsFileError(ValueError):
    """The clients file cannot be used; the message says where and what is wrong."""


@dataclass(frozen=True)
class Limits:
    """A client's limits; None: no limit of that kind."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    max_in_flight: int | None = None

    def shown(self) -> dict[str, int | None]:
        """The limits by name (status, /self/clients)."""
        return {name: getattr(self, name) for name in LIMITS}


@dataclass(frozen=True)
class Client:
    """One client: its id (the only thing ever shown of it), its models and limits."""

    id: str
    key_sha256: str = field(repr=False)
    limits: Limits = Limits()
    models: tuple[str, ...] | None = None  # globs; None: every model served

    def may_use(self, model: str) -> bool:
        """Whether `model` is one of this client's models."""
        if self.models is None:
            return True
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)


def key_hash(key: str) -> str:
    """The SHA-256 of a client key, as the clients file holds it."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Clients:
    """Every known client by key hash; empty: the node is open to anyone."""

    by_hash: dict[str, Client]
    defaults: Limits = Limits()

    @property
    def closed(self) -> bool:
        """Only known keys may call."""
        return bool(self.by_hash)

    def find(self, key: str) -> Client | None:
        """The client whose key this is, if any (dict lookup of the key's SHA-256: the
        comparison is of hashes, so it leaks nothing of the keys through timing)."""
        return self.by_hash.get(key_hash(key))

    def by_id(self) -> dict[str, Client]:
        """Every client by its id."""
        return {client.id: client for client in self.by_hash.values()}


def load(path: str | None, node_api_keys: tuple[str, ...] = ()) -> Clients:
    """The clients of the file at `path` (if any) and of NODE_API_KEYS."""
    defaults = Limits()
    by_hash: dict[str, Client] = {}
    if path:
        defaults, clients = parse(Path(path).read_text(encoding="utf-8"), path)
        by_hash = {client.key_sha256: client for client in clients}
    for key in node_api_keys:
        digest = key_hash(key)
        by_hash.setdefault(digest, Client(key_id(key), digest, defaults))
    return Clients(by_hash, defaults)


def load_or_exit(clients_file: str, node_api_keys: tuple[str, ...]) -> Clients:
    """`load`, or (a bad or missing file at start) one clear line and exit status 2."""
    try:
        return load(clients_file or None, node_api_keys)
    except (OSError, ClientsFileError) as error:
        sys.stderr.write(f"l104-node: invalid CLIENTS_FILE: {error}\n")
        raise SystemExit(2) from None


def parse(text: str, name: str = "clients file") -> tuple[Limits, list[Client]]:
    """The `[defaults]` and clients of a clients file's text; ClientsFileError (with the line)
    if anything in it is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ClientsFileError(f"{name}: {error}") from None
    unknown = sorted(set(data) - {"defaults", "clients"})
    if unknown:
        raise ClientsFileError(f"{name}: unknown table(s) {', '.join(unknown)}")
    defaults = _limits(data.get("defaults", {}), Limits(), _where(text, name, "defaults"))
    clients: list[Client] = []
    seen: dict[str, str] = {}
    table = data.get("clients", {})
    if not isinstance(table, dict):
        raise ClientsFileError(f"{name}: clients must be a table of [clients.ID] tables")
    for client_id, spec in table.items():
        where = _where(text, name, f"clients.{client_id}")
        if not ID_PATTERN.fullmatch(client_id):
            raise ClientsFileError(f"{where}: a client id is letters, digits, '-' and '_'")
        if not isinstance(spec, dict):
            raise ClientsFileError(f"{where}: must be a table")
        extra = sorted(set(spec) - _CLIENT_KEYS)
        if extra:
            raise ClientsFileError(f"{where}: unknown key(s) {', '.join(extra)}")
        digest = spec.get("key_sha256")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest.lower()):
            raise ClientsFileError(f"{where}: key_sha256 must be 64 hex digits (a SHA-256)")
        digest = digest.lower()
        if digest in seen:
            raise ClientsFileError(f"{where}: the same key as client {seen[digest]}")
        seen[digest] = client_id
        limits = _limits({k: v for k, v in spec.items() if k in LIMITS}, defaults, where)
        clients.append(Client(client_id, digest, limits, _models(spec.get("models"), where)))
    return defaults, clients


def _limits(spec: Any, defaults: Limits, where: str) -> Limits:
    if not isinstance(spec, dict):
        raise ClientsFileError(f"{where}: must be a table")
    extra = sorted(set(spec) - set(LIMITS))
    if extra:
        raise ClientsFileError(f"{where}: unknown limit(s) {', '.join(extra)}")
    values: dict[str, int | None] = {}
    for name in LIMITS:
        if name not in spec:
            values[name] = getattr(defaults, name)
            continue
        value = spec[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ClientsFileError(f"{where}: {name} must be a whole number >= 1")
        values[name] = value
    return Limits(**values)


def _models(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(m, str) and m for m in value):
        raise ClientsFileError(f"{where}: models must be a non-empty list of model names")
    return tuple(m.removeprefix("models/") for m in value)


def _where(text: str, name: str, table: str) -> str:
    """`name`, line N ([table]): where a table starts, for error messages."""
    header = re.compile(rf"^[ \t]*\[[ \t]*{re.escape(table)}[ \t]*\]", re.M)
    match = header.search(text)
    if match is None:
        return f"{name} ([{table}])"
    return f"{name}, line {text.count(chr(10), 0, match.start()) + 1} ([{table}])"
