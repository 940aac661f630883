"""Audit and job database (SQLAlchemy 2 + Alembic)."""

from cdss.db.models import (
    ApiToken,
    AuditEvent,
    Base,
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Result,
    Role,
    Series,
    Study,
    utcnow,
)
from cdss.db.session import Database, create_db_engine, migrate

__all__ = [
    "ApiToken",
    "AuditEvent",
    "Base",
    "Database",
    "Delivery",
    "DeliveryState",
    "Instance",
    "Job",
    "JobState",
    "Result",
    "Role",
    "Series",
    "Study",
    "create_db_engine",
    "migrate",
    "utcnow",
]
