"""Fewer glibc malloc arenas for the gunicorn master and the workers it forks.

glibc gives each thread that allocates concurrently its own arena (up to 8 per core), and
arenas are rarely returned: a gthread worker's RSS climbs for its first tens of thousands of
requests as its threads take turns. Two arenas, the usual setting for threaded Python
servers (`MALLOC_ARENA_MAX=2`), keep workers smaller and flat. The master sets it before it
forks, so every worker inherits it; an operator's own MALLOC_ARENA_MAX wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # from glibc's malloc.h
DEFAULT_ARENAS = 2


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap this process's malloc arenas (and its future children's); True if applied."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc
        return False
