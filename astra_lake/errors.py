"""Typed, actionable errors raised by astra-lake.

Every error names what was wrong (file, table, row, column) and what was expected, in one line.
"""

from __future__ import annotations


class AstraLakeError(Exception):
    """Base class of every error raised on purpose by astra-lake."""


class SchemaError(AstraLakeError):
    """data_schema/ is inconsistent (duplicate names, bad bits, unknown references)."""


class UnknownTableError(AstraLakeError, KeyError):
    """A table, pipeline or flag column name that data_schema/ does not declare."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class FlagError(AstraLakeError, ValueError):
    """A flag value or flag name is invalid, or a summary flag is not defined for a pipeline."""


class UndefinedSummaryFlagError(FlagError):
    """flag_warn / flag_bad asked of a pipeline that does not define it."""


class ValidationError(AstraLakeError, ValueError):
    """Data offered to the lake does not match data_schema/; nothing was written."""


class LakeNotFoundError(AstraLakeError, FileNotFoundError):
    """The path is not an astra-lake (no lake.json)."""


class VersionNotFoundError(AstraLakeError, LookupError):
    """A version or tag that the lake does not have (or that vacuum removed)."""


class CommitConflictError(AstraLakeError):
    """A concurrent writer changed the table and the commit could not be retried."""


class IngestError(AstraLakeError):
    """A file could not be ingested; the message names the file and the reason."""

    format_guess: str = "unknown"


class ArtefactError(AstraLakeError, ValueError):
    """A trained artefact (ONNX model, template or model grid, components file, external program) is missing,
    unreadable, or does not match the inputs or outputs its pipeline expects."""


class InputShapeError(AstraLakeError, ValueError):
    """Arrays handed to a pipeline's science code do not have the shapes (or names) it needs."""


__all__ = [
    "ArtefactError",
    "AstraLakeError",
    "CommitConflictError",
    "FlagError",
    "IngestError",
    "InputShapeError",
    "LakeNotFoundError",
    "SchemaError",
    "UndefinedSummaryFlagError",
    "UnknownTableError",
    "ValidationError",
    "VersionNotFoundError",
]
