"""outgoing webhooks: hooks, and the outbox of their deliveries

Revision ID: 0009_hooks
Revises: 0008_concurrency
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_hooks"
down_revision = "0008_concurrency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hooks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("events", sa.String(500), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "hook_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hook_id", sa.Integer(), sa.ForeignKey("hooks.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=True),
        sa.Column("event_at", sa.Float(), nullable=False),
        sa.Column("webhook_id", sa.String(64), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_hook_deliveries_due", "hook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_hook_deliveries_hook", "hook_deliveries", ["hook_id", "id"])


def downgrade() -> None:
    op.drop_table("hook_deliveries")
    op.drop_table("hooks")
