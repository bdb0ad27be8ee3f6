"""FTS transfer logs (records, format cmsdl-transfers/1) and their latency features (source); imports no torch."""
