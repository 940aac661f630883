"""audit_events is append-only: triggers refuse UPDATE, DELETE (and TRUNCATE on PostgreSQL)

The hash chain *detects* tampering; these triggers *prevent* the ordinary kinds (an application
bug, an operator's ad-hoc SQL, SQL injection through the node's own connection). They do not stop
a database owner or superuser, who can drop or disable the trigger; that is why the chain and the
external anchor (syslog forwarding) remain the evidence. Trade-offs, see docs/audit.md:

* retention purges must drop the trigger first (a deliberate, owner-only step);
* a later migration that rebuilds ``audit_events`` on SQLite (Alembic batch mode copies the
  table) must drop and re-create these triggers around the rebuild;
* on PostgreSQL, also run the node with a role that lacks UPDATE/DELETE/TRUNCATE on the table
  (``REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM cdss``) where the deployment allows a
  separate owner role.

Revision ID: 0002_audit_append_only
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002_audit_append_only"
down_revision = "0001"
branch_labels = None
depends_on = None

_MESSAGE = "audit_events is append-only; see docs/audit.md"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            f"""
            CREATE OR REPLACE FUNCTION cdss_audit_events_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{_MESSAGE} (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
            END
            $$;
            """
        )
        op.execute(
            "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION cdss_audit_events_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION cdss_audit_events_append_only()"
        )
    elif dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events "
                f"BEGIN SELECT RAISE(ABORT, '{_MESSAGE} ({verb} refused)'); END"
            )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS cdss_audit_events_append_only()")
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
