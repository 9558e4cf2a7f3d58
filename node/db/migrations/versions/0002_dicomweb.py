"""DICOMweb egress, inference requests, cancelled jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 09:00:00.000000

``jobs.state`` gains the value ``cancelled``: the column is a plain string
(non-native enum, no CHECK constraint), so no schema change is needed for it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inference_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("pipelines", sa.JSON(), nullable=False),
        sa.Column("destinations", sa.JSON(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "queued",
                "retrieving",
                "running",
                "succeeded",
                "failed",
                name="requeststate",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retrieved_instances", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("inference_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inference_requests_state"), ["state"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_inference_requests_study_instance_uid"),
            ["study_instance_uid"],
            unique=False,
        )

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("inference_request_id", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_jobs_inference_request_id"), ["inference_request_id"], unique=False
        )
        batch_op.create_foreign_key(
            "fk_jobs_inference_request_id", "inference_requests", ["inference_request_id"], ["id"]
        )

    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("http_status", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_column("http_status")

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("fk_jobs_inference_request_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_jobs_inference_request_id"))
        batch_op.drop_column("inference_request_id")

    with op.batch_alter_table("inference_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inference_requests_study_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_inference_requests_state"))

    op.drop_table("inference_requests")
