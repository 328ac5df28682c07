"""The PostgreSQL backend of the state database (``state.url: postgresql://…``).

- ``url``: the connection string with the password kept apart and redacted in every message;
- ``connection``: the dialect shim (``?`` placeholders, rows readable by name or position);
- ``db``: PostgresStateDB, a connection pool behind promoter.state.db.StateDB;
- ``schema``: migrations, run once under an advisory lock whoever starts first;
- ``listener``: LISTEN/NOTIFY wake-ups; ``leader``: one holder per advisory lock.
"""

from promoter.adapters.postgres_state.db import PostgresStateDB
from promoter.adapters.postgres_state.url import StateUrl, redact

__all__ = ["PostgresStateDB", "StateUrl", "redact"]
