"""File and ROOT input/output shared by every command: atomic writes and text/JSON readers (cmsdl.io.files,
re-exported here), and the one ROOT opener and input globbing (`match_files`) for local, root:// and https://
paths (cmsdl.io.root). Imports no torch."""

from cmsdl.io.files import (MAX_INT_DIGITS, StagedFiles, atomic_path, atomic_write, loads_json, read_input_text,
                            staged_files, write_bytes_atomic, write_config, write_files_atomic, write_json)

__all__ = ["MAX_INT_DIGITS", "StagedFiles", "atomic_path", "atomic_write", "loads_json", "read_input_text",
           "staged_files", "write_bytes_atomic", "write_config", "write_files_atomic", "write_json"]
