"""Admin and audit HTTP API, dashboard, health and Prometheus metrics (FastAPI).

``create_app(settings, db, node=None)`` builds the application; ``cdss serve`` mounts it with
uvicorn in-process, ``cdss api --config …`` runs it alone. See docs/admin-api.md.
"""

from cdss.api.app import create_app
from cdss.api.node import NodeStatus

__all__ = ["NodeStatus", "create_app"]
