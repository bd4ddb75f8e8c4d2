"""`python -m app.clients new-key ID`: a fresh client key, printed once, and the lines of the
clients file that let it call (only its SHA-256 goes in the file)."""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence

from app.clients.registry import ID_PATTERN, key_hash


def new_key(client_id: str) -> tuple[str, str]:
    """A new key for `client_id` and its `[clients.ID]` table."""
    key = "l104-" + secrets.token_urlsafe(32)
    table = f'[clients.{client_id}]\nkey_sha256 = "{key_hash(key)}"\n'
    return key, table


def main(argv: Sequence[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m app.clients")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("new-key", help="make a key for a client of CLIENTS_FILE")
    make.add_argument("id", help="the client id: letters, digits, '-' and '_'")
    args = parser.parse_args(argv)
    if not ID_PATTERN.fullmatch(args.id):
        print("a client id is letters, digits, '-' and '_' (at most 64)", file=sys.stderr)
        return 2
    key, table = new_key(args.id)
    print(f"key (give it to the client; it is shown only now): {key}\n")
    print("add to the clients file:\n")
    print(table, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
