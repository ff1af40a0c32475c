"""concurrency limits: a pipeline's `max_concurrent_runs` and `on_limit`, a run's `queued`

Revision ID: 0008_concurrency
Revises: 0007_schedules
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_concurrency"
down_revision = "0007_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("pipelines", sa.Column("max_concurrent_runs", sa.Integer(), nullable=True))
    op.add_column("pipelines", sa.Column("on_limit", sa.String(16), nullable=False,
                                         server_default="queue"))
    op.add_column("pipeline_runs", sa.Column("queued", sa.Boolean(), nullable=False,
                                             server_default=sa.false()))
    op.create_index("ix_runs_queued", "pipeline_runs", ["pipeline_id", "id"],
                    postgresql_where=sa.text("queued"), sqlite_where=sa.text("queued"))


def downgrade() -> None:
    op.drop_index("ix_runs_queued", table_name="pipeline_runs")
    op.drop_column("pipeline_runs", "queued")
    op.drop_column("pipelines", "on_limit")
    op.drop_column("pipelines", "max_concurrent_runs")
