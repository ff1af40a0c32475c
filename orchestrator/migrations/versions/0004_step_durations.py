"""step_durations: the step-duration histogram, kept in step with transitions

Counted from the run_steps already there, so /metrics goes on where the scrape-time count
left off.

Revision ID: 0004_step_durations
Revises: 0003_reliability
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_step_durations"
down_revision = "0003_reliability"
branch_labels = None
depends_on = None

# As orchestrator.durations had them when this ran: a migration does not follow later edits.
BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
SHARDS = 8


def upgrade() -> None:
    op.create_table(
        "step_durations",
        sa.Column("template_name", sa.String(length=200), nullable=False),
        sa.Column("agent", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("template_name", "agent", "status", "bucket", "shard"),
    )
    bucket = " ".join(f"WHEN d <= {bound} THEN {i}" for i, bound in enumerate(BUCKETS))
    op.execute(
        "INSERT INTO step_durations (template_name, agent, status, bucket, shard, steps, seconds) "
        f"SELECT template_name, agent, status, CASE {bucket} ELSE {len(BUCKETS)} END, "
        f"run_id % {SHARDS}, count(*), sum(d) "
        "FROM (SELECT template_name, agent, status, run_id, completed_at - started_at AS d "
        "      FROM run_steps WHERE status IN ('completed', 'failed') "
        "      AND started_at IS NOT NULL AND completed_at IS NOT NULL) AS finished "
        f"GROUP BY template_name, agent, status, CASE {bucket} ELSE {len(BUCKETS)} END, "
        f"run_id % {SHARDS}"
    )


def downgrade() -> None:
    op.drop_table("step_durations")
