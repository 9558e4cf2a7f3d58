"""Sender of an instance, viewer-profile variant of an output, superseded jobs, request retries

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 15:00:00.000000

``instances.sender`` names the configured source that sent an instance, so
evidence-based completeness can ask a DICOMweb-only PACS for its counts.
``outputs.variant`` names the viewer profile a result object was written for
(one SEG/SR/SC/KO set per distinct destination profile); existing rows keep
NULL, which egress treats as "for every destination", as before.
``jobs.superseded_by_job_id`` links a job to the one that replaced it under
``late_series: rerun`` (whose rejection note withdraws its results).
``inference_requests.attempts`` / ``next_attempt_at``: failed retrievals are
retried with backoff.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sender", sa.String(length=64), nullable=True))
    with op.batch_alter_table("outputs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variant", sa.String(length=64), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("superseded_by_job_id", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_jobs_superseded_by_job_id"), ["superseded_by_job_id"], unique=False
        )
        batch_op.create_foreign_key(
            "fk_jobs_superseded_by_job_id", "jobs", ["superseded_by_job_id"], ["id"]
        )
    with op.batch_alter_table("inference_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inference_requests", schema=None) as batch_op:
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("attempts")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("fk_jobs_superseded_by_job_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_jobs_superseded_by_job_id"))
        batch_op.drop_column("superseded_by_job_id")
    with op.batch_alter_table("outputs", schema=None) as batch_op:
        batch_op.drop_column("variant")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("sender")
