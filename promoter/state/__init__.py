"""promoter's own state: one SQLite database per state directory (see promoter.state.db)."""

from promoter.state.db import DB_FILENAME, StateDB, ensure_state_dir

__all__ = ["DB_FILENAME", "StateDB", "ensure_state_dir"]
