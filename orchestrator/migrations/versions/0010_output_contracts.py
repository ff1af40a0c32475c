"""output contracts: a template's `output_contract`, copied into each run's step snapshot

Revision ID: 0010_output_contracts
Revises: 0009_hooks
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010_output_contracts"
down_revision = "0009_hooks"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("workflow_templates", sa.Column("output_contract", JSON, nullable=True))
    op.add_column("run_steps", sa.Column("output_contract", JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("run_steps", "output_contract")
    op.drop_column("workflow_templates", "output_contract")
