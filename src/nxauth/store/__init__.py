"""The store: where nxauth keeps state (the embedded SQLite file)."""
