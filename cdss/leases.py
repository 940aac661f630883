"""Leases and back-off, shared by the job and the delivery state machines (bottom layer).

Lease owners: who holds a job or delivery lease, and whether that process still exists.

An owner string is ``<host>:<pid>:<role>:<token>``. Leases normally end when they expire
(``jobs.lease_s``, ``dispatch.lease_s``), but after a crash of a process on *this* host the
node does not have to wait that long: when the owner's host is this host and its process is
gone (or the pid now belongs to a process that did not create that token, e.g. the restarted
node in a container that is pid 1 again), the lease is returned to the queue at once.
Owners on other hosts are only ever judged by their lease expiry.

Back-off: a failed attempt *n* waits ``base * 2**(n-1)`` seconds, at most a cap
(:func:`backoff_s`), for analysis jobs (``jobs.retry_backoff_s``, one hour cap) and for
deliveries (``dispatch.initial_backoff_s`` … ``dispatch.max_backoff_s``) alike.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass

__all__ = ["LeaseOwner", "backoff_s", "new_owner", "owner_is_gone"]

_TOKENS: set[str] = set()
_TOKENS_LOCK = threading.Lock()


@dataclass(frozen=True)
class LeaseOwner:
    """Parsed owner string."""

    host: str
    pid: int
    role: str
    token: str

    @classmethod
    def parse(cls, owner: str) -> LeaseOwner | None:
        parts = owner.rsplit(":", 3)
        if len(parts) != 4:
            return None
        host, pid, role, token = parts
        try:
            return cls(host, int(pid), role, token)
        except ValueError:
            return None


def new_owner(role: str) -> str:
    """Return a fresh owner id for this process, e.g. ``"node1:4242:worker:9f3a1c2b"``.

    Parameters
    ----------
    role
        Short word naming the thread's job (``worker``, ``dispatch``, ``celery``); no colons.
    """
    token = uuid.uuid4().hex[:12]
    with _TOKENS_LOCK:
        _TOKENS.add(token)
    return f"{socket.gethostname()}:{os.getpid()}:{role.replace(':', '-')}:{token}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is gone for our purposes
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def owner_is_gone(owner: str | None) -> bool:
    """True when ``owner`` ran on this host and that process no longer exists.

    False whenever this cannot be known (another host, unparsable owner): such leases end only
    by expiry.
    """
    if not owner:
        return False
    parsed = LeaseOwner.parse(owner)
    if parsed is None or parsed.host != socket.gethostname():
        return False
    if parsed.pid == os.getpid():
        with _TOKENS_LOCK:
            return parsed.token not in _TOKENS
    return not _pid_alive(parsed.pid)


def backoff_s(base_s: float, attempts: int, cap_s: float) -> float:
    """Exponential back-off before the next attempt: ``base_s * 2**(attempts-1)``, at most ``cap_s``.

    Parameters
    ----------
    base_s
        Delay after the first failed attempt, seconds.
    attempts
        Attempts made so far (1 after the first failure); values below 1 count as 1.
    cap_s
        Longest delay, seconds.
    """
    return float(min(cap_s, base_s * (2 ** max(0, attempts - 1))))
