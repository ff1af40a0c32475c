"""reruns: a run's source run (`rerun_of`) and its steps carried over from it (`reused`)

Revision ID: 0006_rerun
Revises: 0005_injection
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_rerun"
down_revision = "0005_injection"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("pipeline_runs", sa.Column("rerun_of", sa.Integer(), nullable=True))
    op.add_column("run_steps", sa.Column("reused", sa.Boolean(), nullable=False,
                                         server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("run_steps", "reused")
    op.drop_column("pipeline_runs", "rerun_of")
