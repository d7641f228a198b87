"""Vector store, SQLite catalogue and search over an index directory."""
