"""What the API needs from the running node (``cdss serve`` passes it to :func:`create_app`)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["NodeStatus"]


@runtime_checkable
class NodeStatus(Protocol):
    """Live status of the node's in-process workers.

    Required: :meth:`workers_alive` and :meth:`workers_expected`. Optional methods, used when
    present (looked up with ``getattr``):

    * ``submit_job(job_id: int) -> None`` — hand a re-queued job to the job backend right away
      (the local backend also finds it by polling; Celery needs the id published);
    * ``wake_dispatch() -> None`` — tell the dispatcher a delivery is due now;
    * ``queue_depth() -> Mapping[str, int]`` — backend-specific queue lengths (e.g. the broker's),
      shown next to the database counts;
    * ``broker_status() -> tuple[bool, str] | None`` — Celery backend: broker reachable, and a
      detail; ``/readyz`` adds a ``broker`` check when it is not ``None``.

    Without a node (the standalone ``cdss api``) the readiness check reports workers as
    "not part of this process" and the database state alone drives everything.
    """

    def workers_alive(self) -> int:
        """Number of analysis and delivery worker threads/processes that are running."""
        ...

    def workers_expected(self) -> int:
        """Number of workers the configuration asks for (``jobs.workers`` + ``dispatch.workers``)."""
        ...
