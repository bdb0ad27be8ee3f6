"""ROOT hit I/O for event images: toy CMS tracker simulation, chunked reading, rendering, PNG conversion.

Nothing in this package imports torch or lightning: converters stay light and start fast in worker processes.
"""
