"""nodes: each node's live-session snapshot with its heartbeat, and kill requests between nodes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 03:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "node_sessions",
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sessions", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("node", name=op.f("pk_node_sessions")),
    )
    op.create_table(
        "session_kill_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("requested_from", sa.String(length=64), nullable=True),
        sa.Column("surface", sa.String(length=16), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_kill_requests")),
    )
    op.create_index(op.f("ix_session_kill_requests_node"), "session_kill_requests", ["node"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_session_kill_requests_node"), table_name="session_kill_requests")
    op.drop_table("session_kill_requests")
    op.drop_table("node_sessions")
