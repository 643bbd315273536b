"""Retention for the tables that only grow: a delivery's payload may be pruned, and indexes for
the audit trail's filters and the prune at ten million rows.

Revision ID: 0013_retention
Revises: 0012_exact_lookups
Create Date: 2026-12-01

`flask maintenance prune` clears the raw payload of old deliveries and keeps their row (the svix
id is what makes a late copy a duplicate): `webhook_events.payload` becomes nullable and
`payload_pruned_at` says when it went. A partial index on the deliveries whose payload is kept
takes the prune straight to the oldest of them, past the millions already pruned. Another holds
the failed and stale deliveries by type, for the Webhooks page filtered by both (a rare type's
failures read every delivery of that type before: 45-56 ms at ten million).

The audit trail's filters get an index each, newest first: by action and by actor (its id, and
its label, which also lists the actors by a skip scan), replacing the plain action and actor_id
indexes. Without them every page of /audit read all ten million actions to list the distinct ones
(300 ms), and an actor matching few events walked the whole table (6.8 s for one matching none).

On PostgreSQL dropping NOT NULL and adding a nullable column change only the catalogue, and the
indexes are built CONCURRENTLY (outside the migration's transaction), so the webhook and the
dashboard keep writing while they are built on tables of millions of rows.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_retention"
down_revision = "0012_exact_lookups"
branch_labels = None
depends_on = None

PAYLOAD_KEPT = "payload IS NOT NULL"
REPLAYABLE = "outcome IN ('failed', 'stale')"
# The audit trail's filters at ten million events: each read newest first from its own index. The
# action and actor indexes replace the single-column ones (same leading column, so they also serve
# the foreign key and the sign-in throttle), and list the distinct actions and actor labels by a
# skip scan (app/audit/queries.py).
AUDIT_INDEXES = {
    "ix_audit_events_action_occurred_at": (["action", "occurred_at", "id"], "ix_audit_events_action", ["action"]),
    "ix_audit_events_actor_id_occurred_at": (
        ["actor_id", "occurred_at", "id"],
        "ix_audit_events_actor_id",
        ["actor_id"],
    ),
    "ix_audit_events_actor_label_occurred_at": (["actor_label", "occurred_at", "id"], None, None),
}


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade():
    with op.batch_alter_table("webhook_events") as batch_op:
        batch_op.alter_column("payload", existing_type=sa.Text(), nullable=True)
        batch_op.add_column(sa.Column("payload_pruned_at", sa.DateTime(), nullable=True))
    if not _postgresql():
        op.create_index(
            "ix_webhook_events_payload_kept", "webhook_events", ["received_at"], sqlite_where=sa.text(PAYLOAD_KEPT)
        )
        op.create_index(
            "ix_webhook_events_replayable_type",
            "webhook_events",
            ["type", "received_at", "id"],
            sqlite_where=sa.text(REPLAYABLE),
        )
        for name, (columns, replaced, _old_columns) in AUDIT_INDEXES.items():
            op.create_index(name, "audit_events", columns)
            if replaced:
                op.drop_index(replaced, table_name="audit_events")
        return
    # Built without blocking writes (the webhook keeps recording); a rerun after an interruption
    # finds what was built. CONCURRENTLY cannot run inside the migration's transaction.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_webhook_events_payload_kept",
            "webhook_events",
            ["received_at"],
            postgresql_where=sa.text(PAYLOAD_KEPT),
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.create_index(
            "ix_webhook_events_replayable_type",
            "webhook_events",
            ["type", "received_at", "id"],
            postgresql_where=sa.text(REPLAYABLE),
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        for name, (columns, replaced, _old_columns) in AUDIT_INDEXES.items():
            op.create_index(name, "audit_events", columns, postgresql_concurrently=True, if_not_exists=True)
            if replaced:
                op.drop_index(replaced, table_name="audit_events", postgresql_concurrently=True, if_exists=True)


def downgrade():
    for name, (_columns, replaced, old_columns) in AUDIT_INDEXES.items():
        if replaced:
            op.create_index(replaced, "audit_events", old_columns)
        op.drop_index(name, table_name="audit_events")
    op.drop_index("ix_webhook_events_replayable_type", table_name="webhook_events")
    op.drop_index("ix_webhook_events_payload_kept", table_name="webhook_events")
    # A pruned payload cannot come back: those rows get an empty body to satisfy NOT NULL again.
    op.execute("UPDATE webhook_events SET payload = '' WHERE payload IS NULL")
    with op.batch_alter_table("webhook_events") as batch_op:
        batch_op.drop_column("payload_pruned_at")
        batch_op.alter_column("payload", existing_type=sa.Text(), nullable=False)
