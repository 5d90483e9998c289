"""Text log (console + file) and TensorBoard, written by rank 0 only."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def get_logger(name: str, log_file: str | os.PathLike | None = None, enabled: bool = True) -> logging.Logger:
    """A logger printing ``time | message`` to stderr and, if given, appending to ``log_file``.

    With ``enabled=False`` (ranks other than 0) it only reports warnings and errors.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO if enabled else logging.WARNING)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s | %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if log_file is not None and enabled:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger
