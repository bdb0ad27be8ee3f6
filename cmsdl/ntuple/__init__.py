"""Event ntuples (NanoAOD-like ROOT trees) as feature tables, without torch: the feature spec, streaming
reads of local and remote (root://, https://) files, the columnar cache, the toy top-quark simulator and
score files written back next to the input events."""
