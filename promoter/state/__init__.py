"""promoter's own state: one state database behind one interface (promoter.state.db.StateDB):
SQLite in the state directory by default (promoter.state.sqlite), PostgreSQL when state.url
is set (promoter.adapters.postgres_state, chosen by the composition root)."""

from promoter.state.db import DB_FILENAME, StateDB, ensure_state_dir

__all__ = ["DB_FILENAME", "StateDB", "ensure_state_dir"]
