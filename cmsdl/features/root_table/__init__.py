"""ROOT tables as feature rows: the feature spec and its expressions, the streaming reader, the column cache;
imports no torch."""
