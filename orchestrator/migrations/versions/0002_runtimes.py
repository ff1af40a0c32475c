"""run_steps.callback_secret_hash: the hashed per-attempt secret of webhook callbacks

Revision ID: 0002_runtimes
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_runtimes"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_steps") as batch:
        batch.add_column(sa.Column("callback_secret_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run_steps") as batch:
        batch.drop_column("callback_secret_hash")
