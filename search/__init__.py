"""Finding neighbours: the in-memory index, following the store, the query function."""
