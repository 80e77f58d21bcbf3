"""Linked identities (Google sign-in).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Time = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "linked_identities",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("last_used_at", Time, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_linked_identities"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_linked_identities_user_id_users",
                                ondelete="CASCADE"),
        sa.UniqueConstraint("provider", "subject", name="uq_linked_identities_provider"),
        sa.UniqueConstraint("user_id", "provider", name="uq_linked_identities_user_id"),
    )


def downgrade():
    op.drop_table("linked_identities")
