"""Permissions on roles; service clients.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("roles") as batch:
        batch.add_column(sa.Column("permissions", sa.JSON(), nullable=False, server_default="[]"))
    op.create_table(
        "service_clients",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_service_clients"),
        sa.UniqueConstraint("client_id", name="uq_service_clients_client_id"),
    )


def downgrade():
    op.drop_table("service_clients")
    with op.batch_alter_table("roles") as batch:
        batch.drop_column("permissions")
