"""Workflow error documents (records) and the error x site feature matrix (source); imports no torch."""
