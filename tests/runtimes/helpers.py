"""Reading the runtime stack's database directly, for what the API does not show."""

from __future__ import annotations

from typing import Any

import psycopg


def _connect(database_url: str) -> psycopg.Connection:
    return psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"))


def all_rows_text(database_url: str) -> str:
    """Every row of every table, as text: for proving a value was never stored."""
    out = []
    with _connect(database_url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        for table in tables:
            out.extend(r[0] for r in conn.execute(f"SELECT x::text FROM {table} x"))
    return "\n".join(out)


def events(database_url: str, run_id: int, kind: str) -> list[dict[str, Any]]:
    with _connect(database_url) as conn:
        rows = conn.execute(
            "SELECT step_index, data, created_at FROM run_events "
            "WHERE run_id = %s AND type = %s ORDER BY id", (run_id, kind)).fetchall()
    return [{"step_index": i, **data, "at": at} for i, data, at in rows]


def callback_hash(database_url: str, run_id: int, step_index: int) -> str | None:
    with _connect(database_url) as conn:
        row = conn.execute(
            "SELECT callback_secret_hash FROM run_steps WHERE run_id = %s AND step_index = %s",
            (run_id, step_index)).fetchone()
    return row[0]
