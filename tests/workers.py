"""What each pytest-xdist worker owns, so no test depends on another running beside it.

`scripts/test` runs the suite across the machine's cores. Every worker gets its own migrated
template databases (named by process id in conftest), its own temp folders (pytest's basetemp
per worker), its own Redis database number and its own range of TCP ports, below the kernel's
ephemeral range so that no outgoing connection of another worker can take one of them.
"""

from __future__ import annotations

import os
import socket
import zlib

PORTS_START, PORTS_END = 20000, 32000  # below Linux's ephemeral range (32768-60999)
PORTS_PER_SLOT = 250
REDIS_DATABASES = 16  # Redis's default number of logical databases


def worker_index() -> int:
    """0 for a serial run or xdist's gw0, N for gwN."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0


def redis_url() -> str:
    """This worker's Redis database on the machine's Redis (pub/sub channels are namespaced by
    each test database's instance id on top of that)."""
    return f"redis://127.0.0.1:6379/{worker_index() % REDIS_DATABASES}"


_next_port = 0


def _slot() -> int:
    """This worker's block of ports: by worker, offset by the run (xdist's run id, else this
    process), so that two suites running at once on one machine rarely share a block."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getppid())
    slots = (PORTS_END - PORTS_START) // PORTS_PER_SLOT
    return (zlib.crc32(run.encode()) + worker_index()) % slots


def free_port() -> int:
    """A loopback port no other worker of this run hands out and nothing listens on now."""
    global _next_port
    start = PORTS_START + _slot() * PORTS_PER_SLOT
    for _ in range(PORTS_PER_SLOT):
        port = start + _next_port
        _next_port = (_next_port + 1) % PORTS_PER_SLOT
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in this worker's block")
