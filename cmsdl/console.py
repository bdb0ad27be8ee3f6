"""What the terminal shows while a run trains: cmsdl's own lines, Lightning's essentials and one line per epoch.

The network printout (cmsdl's and Lightning's ModelSummary), Lightning's tips and setup chatter, and Python warnings
(deprecations) are kept off the terminal and still written to the run's log file. Imports only the standard
library: Hydra configures it (configs/hydra/default.yaml) before any training code loads.
"""

from __future__ import annotations

import logging

FILE_ONLY_LOGGERS = ("py.warnings", "pytorch_lightning.callbacks.model_summary",
                     "lightning.pytorch.callbacks.model_summary", "pytorch_lightning.utilities.model_summary",
                     "lightning.pytorch.utilities.model_summary", "pytorch_lightning.loggers.mlflow",
                     "mlflow", "alembic")
FILE_ONLY_STARTS = ("network:", "💡 Tip", "Tip:", "Trainer already configured", "GPU available", "TPU available",
                    "HPU available", "You are using a CUDA device")
FILE_ONLY_CONTAINS = ("litlogger", "LitLogger", "deprecated", "Deprecat")


class TrainingConsoleFilter(logging.Filter):
    """Drops, on the console handler only, the records that belong in the log file alone; routes Python warnings
    into logging (the `py.warnings` logger), so that they reach the file and not the terminal."""

    def __init__(self) -> None:
        super().__init__()
        logging.captureWarnings(True)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if record.name.startswith(FILE_ONLY_LOGGERS):
            return False
        message = record.getMessage().lstrip()
        return not (message.startswith(FILE_ONLY_STARTS) or any(s in message for s in FILE_ONLY_CONTAINS))
