"""The errors training and export raise on purpose, under one root. Each message is one
line a user can act on; the CLI prints it as ``error: ...`` and exits with status 2.

::

    TrainingError
    ├── DataError            a malformed record, located by file and line (also ValueError)
    └── ExportError          the export cannot proceed (missing data, refused quantisation)
        └── ExportCheckError an exported model failed a check (parity, invariance, ...)
"""

from __future__ import annotations


class TrainingError(Exception):
    """Root of the errors training and export raise on purpose."""


class ExportError(TrainingError, RuntimeError):
    """The export cannot proceed (missing data, failed check, refused quantisation)."""


class ExportCheckError(ExportError):
    """An exported model failed a check; nothing was written."""
