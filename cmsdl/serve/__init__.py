"""The REST model service (`cmsdl serve`), built on cmsdl.inference; no torch."""
