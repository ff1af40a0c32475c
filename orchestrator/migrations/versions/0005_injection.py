"""injection marks: templates' on_injection, findings stored with run inputs and step outputs

Revision ID: 0005_injection
Revises: 0004_step_durations
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005_injection"
down_revision = "0004_step_durations"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("workflow_templates") as t:
        t.add_column(sa.Column("on_injection", sa.String(length=8), nullable=False,
                               server_default="warn"))
    with op.batch_alter_table("pipeline_runs") as t:
        t.add_column(sa.Column("inputs_injection", JSON, nullable=True))
    with op.batch_alter_table("run_steps") as t:
        t.add_column(sa.Column("on_injection", sa.String(length=8), nullable=False,
                               server_default="warn"))
        t.add_column(sa.Column("output_injection", JSON, nullable=True))
        t.add_column(sa.Column("injection", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run_steps") as t:
        t.drop_column("injection")
        t.drop_column("output_injection")
        t.drop_column("on_injection")
    with op.batch_alter_table("pipeline_runs") as t:
        t.drop_column("inputs_injection")
    with op.batch_alter_table("workflow_templates") as t:
        t.drop_column("on_injection")
