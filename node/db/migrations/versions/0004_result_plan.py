"""The result plan of each job

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 12:00:00.000000

``jobs.plan`` holds the job's result plan (``node.study.plan.ResultPlan`` in
its JSON form): every result object it writes, with its identity and the
destinations it goes to, decided once when the job is queued. Jobs queued
before this revision keep NULL and are planned from their minted UIDs and
the destinations as configured when they run.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("plan", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("plan")
