"""Sender of an instance (STOW-RS token or calling AE), viewer-profile variant of an output

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 15:00:00.000000

``instances.sender`` names the configured source that sent an instance, so
evidence-based completeness can ask a DICOMweb-only PACS for its counts.
``outputs.variant`` names the viewer profile a result object was written for
(one SEG/SR/SC/KO set per distinct destination profile); existing rows keep
NULL, which egress treats as "for every destination", as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sender', sa.String(length=64), nullable=True))
    with op.batch_alter_table('outputs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('variant', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outputs', schema=None) as batch_op:
        batch_op.drop_column('variant')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('sender')
