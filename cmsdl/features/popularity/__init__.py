"""Weekly dataset-access CSV (records) and the popularity features and labels (source); imports no torch."""
