"""Database connections shared by every app's long work."""

from django.db import connection


def release_pooled_connection() -> None:
    """Give this thread's connection back to the process's pool (DATABASE_POOL_SIZE) while it waits on something
    else: its next query takes one again in microseconds, and meanwhile another thread writes with it. Left
    alone without a pool (closing would cost a new connection each time) and inside a transaction."""
    if connection.connection is None or connection.in_atomic_block:
        return
    if connection.settings_dict.get("OPTIONS", {}).get("pool"):
        connection.close()
