"""Typed, actionable errors raised by astra-lake.

Every error names what was wrong (file, table, row, column) and what was expected, in one line.
"""

from __future__ import annotations


class AstraLakeError(Exception):
    """Base class of every error raised on purpose by astra-lake."""


class SchemaError(AstraLakeError):
    """data_schema/ is inconsistent (duplicate names, bad bits, unknown references, unknown keys)."""


class InvalidArgumentError(AstraLakeError, ValueError):
    """An argument a caller passed is out of range or of the wrong kind; the message says what is allowed."""


class ConfigError(AstraLakeError, ValueError):
    """The configuration file (``config.toml``) cannot be read, or has an unknown key or a wrong value."""


class CorruptLakeError(AstraLakeError):
    """A lake's own bookkeeping file (``lake.json``) is unreadable; the message names the file."""


class UnknownTableError(AstraLakeError, KeyError):
    """A table, pipeline or flag column name that data_schema/ does not declare."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class FlagError(AstraLakeError, ValueError):
    """A flag value or flag name is invalid, or a summary flag is not defined for a pipeline."""


class UndefinedSummaryFlagError(FlagError):
    """flag_warn / flag_bad asked of a pipeline that does not define it."""


class ValidationError(AstraLakeError, ValueError):
    """Data offered to the lake does not match data_schema/; nothing was written.

    ``table``, ``column`` and ``row`` (of the data as given) locate the first offending value where known.
    """

    def __init__(self, message: str, *, table: str | None = None, column: str | None = None, row: int | None = None) -> None:
        super().__init__(message)
        self.table, self.column, self.row = table, column, row

    def renumbered(self, row: int) -> ValidationError:
        """The same error with its row counted from elsewhere (the start of a call, of a file's HDU)."""
        message = str(self) if self.row is None else str(self).replace(f"row {self.row} ", f"row {row} ", 1)
        return ValidationError(message, table=self.table, column=self.column, row=row)


class LakeNotFoundError(AstraLakeError, FileNotFoundError):
    """The path is not an astra-lake (no lake.json)."""


class VersionNotFoundError(AstraLakeError, LookupError):
    """A version or tag that the lake does not have (or that vacuum removed)."""


class SchemaMismatchError(AstraLakeError):
    """The lake's recorded data_schema and this package's differ: the lake is newer (upgrade astra-lake), it
    needs ``astra-lake migrate`` before writing, or the migration would lose data (the message says which)."""


class CommitConflictError(AstraLakeError):
    """A concurrent writer changed the table and the commit could not be retried."""


class TagExistsError(AstraLakeError, ValueError):
    """A tag name is taken; tags are immutable."""


class StorageError(AstraLakeError, OSError):
    """The lake's files could not be written or locked (read-only, disk full, permission denied).

    The message names the path and the cause; nothing was committed by the call that raised it."""


class CommittedWithErrorsError(AstraLakeError):
    """The call's data WAS committed, but a step after the commit failed (its lake-log line, the automatic
    compaction, the HATS sidecars). The attributes say exactly what is stored; do not write it again."""

    def __init__(
        self,
        message: str,
        *,
        table: str,
        operation: str,
        rows: int,
        delta_version: int,
        lake_version: int | None,
    ) -> None:
        super().__init__(message)
        self.table = table
        self.operation = operation
        self.rows = rows
        self.delta_version = delta_version
        self.lake_version = lake_version  # None when the log line itself could not be written


class QueryRefusedError(AstraLakeError, PermissionError):
    """A statement on a lake connection was refused: it could write files, or it reads outside the snapshot."""


class IngestError(AstraLakeError):
    """A file could not be ingested; the message names the file and the reason, and ``hdu``, ``row``
    (within that HDU) and ``column`` locate it where known."""

    format_guess: str = "unknown"

    def __init__(self, message: str, *, hdu: int | None = None, row: int | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.hdu, self.row, self.column = hdu, row, column


class ReleaseError(AstraLakeError, ValueError):
    """A release cannot be made or does not verify (bad filter, unknown tag, changed or missing file)."""


class DatabaseImportError(AstraLakeError):
    """Astra's PostgreSQL database could not be read as expected; the message names the table."""


class CatalogLoadError(AstraLakeError):
    """A catalogue file could not be loaded; the message names the file and the column or row."""


class ArtefactError(AstraLakeError, ValueError):
    """A trained artefact (ONNX model, template or model grid, components file, external program) is missing,
    unreadable, or does not match the inputs or outputs its pipeline expects."""


class InputShapeError(AstraLakeError, ValueError):
    """Arrays handed to a pipeline's science code do not have the shapes (or names) it needs."""


class DaskUnavailableError(AstraLakeError):
    """dask.distributed is not installed, its scheduler cannot be reached, or the cluster lost a work unit."""


__all__ = [
    "ArtefactError",
    "AstraLakeError",
    "CatalogLoadError",
    "CommitConflictError",
    "CommittedWithErrorsError",
    "ConfigError",
    "CorruptLakeError",
    "DaskUnavailableError",
    "DatabaseImportError",
    "FlagError",
    "IngestError",
    "InputShapeError",
    "InvalidArgumentError",
    "LakeNotFoundError",
    "QueryRefusedError",
    "ReleaseError",
    "SchemaError",
    "SchemaMismatchError",
    "StorageError",
    "TagExistsError",
    "UndefinedSummaryFlagError",
    "UnknownTableError",
    "ValidationError",
    "VersionNotFoundError",
]
