"""The API keys the simulator accepts, and the check of the credentials a call presents.

Keys given at start stay until the process ends; keys added through `POST /_sim/keys` are
forgotten by `/_sim/reset`. With no key at all, every call is let in.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterable
from typing import NamedTuple

from app.simulator import openai_compat as oa
from app.simulator import responses as r
from app.simulator.errors import ApiError, ControlError
from app.simulator.key_ids import key_id

MAX_KEY_LENGTH = 256
MAX_KEYS = 1000
# Visible ASCII but the comma, which separates keys on the command line.
_KEY_TEXT = re.compile(rf"[!-+\--~]{{1,{MAX_KEY_LENGTH}}}")


class Credentials(NamedTuple):
    """How a call authenticated: `auth` is "header", "query", "bearer" or "none"."""

    auth: str
    key: str | None
    key_id: str | None

    def __repr__(self) -> str:
        return f"Credentials(auth={self.auth!r}, key_id={self.key_id!r})"  # never the key


def credentials(auth: str, key: str | None) -> Credentials:
    """The Credentials of a call that presented `key` (or no key) by `auth`."""
    return Credentials(auth, key, None if key is None else key_id(key))


def check_keys(keys: Iterable[object]) -> list[str]:
    """`keys` if each is an acceptable key (visible ASCII, no comma, at most 256 long)."""
    checked: list[str] = []
    for index, key in enumerate(keys):
        if not isinstance(key, str) or not _KEY_TEXT.fullmatch(key):
            raise ControlError(
                f"keys[{index}] must be 1-{MAX_KEY_LENGTH} visible ASCII characters, no comma"
            )
        checked.append(key)
    return checked


def parse_keys(body: object) -> list[str]:
    """The keys of a `POST /_sim/keys` body, `{"keys": [...]}`."""
    keys = body.get("keys") if isinstance(body, dict) and set(body) == {"keys"} else None
    if not isinstance(keys, list) or not keys:
        raise ControlError('the body must be {"keys": [key, ...]} with at least one key')
    return check_keys(keys)


class KeyRing:
    """The accepted keys: those given at start, then those added at run time."""

    def __init__(self, start_keys: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._start = tuple(dict.fromkeys(check_keys(start_keys)))
        self._keys = self._start

    def add(self, keys: Iterable[str]) -> None:
        """Accept `keys` too (until the next reset)."""
        with self._lock:
            merged = tuple(dict.fromkeys((*self._keys, *keys)))
            if len(merged) > MAX_KEYS:
                raise ControlError(f"the simulator holds at most {MAX_KEYS} keys")
            self._keys = merged

    def reset(self) -> None:
        """Forget the keys added at run time."""
        with self._lock:
            self._keys = self._start

    def ids(self) -> list[str]:
        """The ids of the accepted keys, in the order they were given."""
        return [key_id(key) for key in self._keys]

    def known(self, key: str) -> bool:
        """Whether `key` is accepted."""
        given = key.encode()
        return any(secrets.compare_digest(given, k.encode()) for k in self._keys)

    def check(self, caller: Credentials, openai: bool) -> None:
        """Refuse a call with no key (403, or 401 on the OpenAI surface) or an unknown key
        (400 API_KEY_INVALID), unless the simulator knows no key at all."""
        if not self._keys:
            return
        if caller.key is None:
            if openai:
                raise ApiError(401, oa.NO_CREDENTIALS_MESSAGE, oa.NO_CREDENTIALS_DETAILS)
            raise ApiError(403, r.NO_KEY_MESSAGE)
        if not self.known(caller.key):
            raise ApiError(400, r.BAD_KEY_MESSAGE, r.BAD_KEY_DETAILS)
