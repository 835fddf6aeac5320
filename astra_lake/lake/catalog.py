"""The lake directory: tables, the lake-wide version log, tags and the writer lock.

Layout::

    <lake>/lake.json                     format marker, data_schema revision and hash the lake is at
    <lake>/_meta/log.jsonl               one line per commit: lake version -> (table, Delta version, schema hash)
    <lake>/_meta/schemas/<hash>.json     the declarations each schema hash stands for (astra_lake.lake.schemas)
    <lake>/_meta/tags.json               tag -> lake version and the Delta version of every table
    <lake>/_meta/sequences.json          source_pk / spectrum_pk / task_pk high-water marks
    <lake>/<table>/dataset/              Delta table; data files in Norder=/Dir=/Npix= leaves
    <lake>/<table>/hats.properties, partition_info.csv   HATS sidecars for LSDB/Dask
    <lake>/<table>/evolved_columns.json  columns migrate added without rewriting files (read as null where absent)

A *lake version* N is the state after the N-th commit to any table. Delta is the truth for table
contents; the log only names versions. It repairs itself under the writer lock (before every write,
and before tags, versions and info are read): a torn last line (a writer killed while appending it)
is dropped, and Delta commits without a line (a writer killed between its Delta commit and its log
line, or vacuum's own commits) are logged from the Delta commit information.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from astra_lake.errors import (
    AstraLakeError,
    CommittedWithErrorsError,
    LakeNotFoundError,
    SchemaMismatchError,
    StorageError,
    TagExistsError,
    VersionNotFoundError,
)
from astra_lake.lake.delta_store import DataFile, DeltaStore
from astra_lake.lake.files import discard
from astra_lake.lake.locks import atomic_write_text, exclusive
from astra_lake.lake.oserrors import cause, storage_error
from astra_lake.lake.schemas import recorded_schema, schema_hash, store_schema
from astra_lake.lake.sequences import Sequences
from astra_lake.schema.loader import Schema, load_schema

FORMAT = "astra-lake"
# A write leaving a leaf with at least this many files merges that leaf (a commit of its own); lookups
# and queries slow down with the number of files. "auto_compact_min_files" in lake.json; 0 turns it off.
AUTO_COMPACT_MIN_FILES = 8


@dataclass(frozen=True)
class Commit:
    """One line of the lake log."""

    lake_version: int
    table: str
    delta_version: int
    operation: str
    time: str
    rows: int = 0
    schema: str = ""  # hash of the data_schema the commit was written with ("" in logs older than it)


class Catalog:
    """Lake-level state: which tables exist, versions, tags, the writer lock and sequences."""

    def __init__(self, root: Path, schema: Schema | None = None) -> None:
        self.root = Path(root)
        self.schema = schema or load_schema()
        self.meta = self.root / "_meta"
        self.sequences = Sequences(self.meta)
        self._stores: dict[str, DeltaStore] = {}
        self._duck: duckdb.DuckDBPyConnection | None = None
        self._committed: list[Commit] = []  # logged in the current writing() block
        self.pending_migration = ""  # set by open(): the package's data_schema is not the lake's (see migrate)
        self._at: dict[str, Catalog] = {}
        self._opened = False  # made by open(): checks the lake's schema before each write

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, settings: dict[str, Any] | None = None, schema: Schema | None = None) -> Catalog:
        """A new lake at ``root`` (or the one there) recording ``schema`` (default: the package's); ``settings``
        (e.g. ``auto_compact_min_files``) go into a new lake's lake.json."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise StorageError(f"{root}: exists and is not a directory; a lake is a directory")
        marker = root / "lake.json"
        try:
            root.mkdir(parents=True, exist_ok=True)
            if not marker.exists():
                (root / "_meta").mkdir(exist_ok=True)
                schema = schema or load_schema()
                digest = store_schema(root / "_meta", schema)
                info = {
                    "format": FORMAT,
                    "schema_version": schema.version,
                    "schema": digest,
                    "created": _now(),
                    **(settings or {}),
                }
                atomic_write_text(marker, json.dumps(info, indent=1))
        except OSError as exc:
            raise storage_error(exc, root, "cannot create a lake") from None
        return cls.open(root, schema)

    @classmethod
    def open(cls, root: Path, schema: Schema | None = None) -> Catalog:
        """Open a lake with the data_schema it records. A lake at a newer revision than this package's
        (``schema`` or the package's data_schema/) is a :class:`SchemaMismatchError`; an older or different
        one is read with its own schema and refuses writes until ``astra-lake migrate``."""
        root = Path(root)
        if not (root / "lake.json").exists():
            raise LakeNotFoundError(f"{root}: not an astra-lake (no lake.json); create one with `astra-lake init {root}`")
        package = schema or load_schema()
        try:
            info = json.loads((root / "lake.json").read_text())
        except (ValueError, UnicodeDecodeError):
            info = None  # reported by the commands that read lake.json
        recorded = info.get("schema") if isinstance(info, dict) else None
        if not recorded or recorded == schema_hash(package):
            catalog = cls(root, package)  # a lake older than schema recording is taken to be at the package's
            catalog._opened = True
            return catalog
        revision = int(info.get("schema_version", 1))
        if revision > package.version:
            raise SchemaMismatchError(
                f"{root}: written with data_schema revision {revision} ({recorded}), newer than this astra-lake's "
                f"revision {package.version} ({schema_hash(package)}); upgrade astra-lake to read it"
            )
        catalog = cls(root, recorded_schema(root / "_meta", recorded))
        catalog.pending_migration = schema_hash(package)
        return catalog

    @property
    def schema_hash(self) -> str:
        """Hash of the data_schema this catalog reads and writes with (:mod:`astra_lake.lake.schemas`)."""
        return schema_hash(self.schema)

    def at(self, version: int | str | None) -> Catalog:
        """This catalog, or one with the data_schema that lake version (number or tag) was written with."""
        if version is None:
            return self
        if isinstance(version, str) and not version.isdigit():
            tags = self.tags()
            if version not in tags:
                self.resolve(version)  # the error naming the tags
            number = int(tags[version]["lake_version"])
        else:
            number = int(version)
        digest = next((c.schema for c in reversed(self.commits()[:number]) if c.schema), self.schema_hash)
        if digest == self.schema_hash:
            return self
        if digest not in self._at:
            self._at[digest] = Catalog(self.root, recorded_schema(self.meta, digest))
        return self._at[digest]

    @property
    def settings(self) -> dict[str, Any]:
        """lake.json: format marker, schema version and settings (``auto_compact_min_files``)."""
        info: dict[str, Any] = json.loads((self.root / "lake.json").read_text())
        info.setdefault("auto_compact_min_files", AUTO_COMPACT_MIN_FILES)
        return info

    # -- tables ---------------------------------------------------------------------------------
    def store(self, table: str) -> DeltaStore:
        """The table's store (one per catalog, so its open Delta table is reused)."""
        if table not in self._stores:
            self._stores[table] = DeltaStore(self.root / table, self.schema.table(table))
        return self._stores[table]

    def duck(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB cursor for the writer's lookups (keys, identities, positions). All cursors share one
        database whose Parquet footer cache stays valid because data files are never modified: at 50 k
        spectra a write's natural-key check drops from 0.55 to 0.26 s."""
        if self._duck is None:
            self._duck = duckdb.connect()
            self._duck.execute("SET parquet_metadata_cache = true")
        return self._duck.cursor()

    def existing_tables(self) -> list[str]:
        return [t for t in self.schema.tables if self.store(t).exists()]

    @contextmanager
    def writing(self) -> Iterator[None]:
        """The lake-wide writer lock: writers queue, readers never wait. The log is repaired first.

        An OS fault inside (read-only lake, disk full, permission denied) becomes a one-line
        :class:`StorageError` naming the path and the cause, or, once something was committed in the
        block, a :class:`CommittedWithErrorsError` that says what was."""
        if self.pending_migration:
            raise SchemaMismatchError(
                f"{self.root}: the lake is at data_schema {self.schema_hash} (revision {self.schema.version}), this "
                f"astra-lake declares {self.pending_migration}; run `astra-lake migrate` (--dry-run: the plan) before writing"
            )
        self._committed = []
        try:
            with exclusive(self.meta / "write.lock"):
                self.repair_log()
                self._check_schema()
                self._committed = []
                yield
        except OSError as exc:
            if isinstance(exc, AstraLakeError):
                raise
            if self._committed:
                raise _after(self._committed, storage_error(exc, self.root)) from exc
            raise storage_error(exc, self.root) from None
        finally:
            self._committed = []

    def _check_schema(self) -> None:
        """Under the writer lock: a lake made before schema recording records the schema of its first write;
        a catalog from :meth:`open` refuses to write once another process migrated the lake."""
        marker = self.root / "lake.json"
        try:
            info = json.loads(marker.read_text())
        except (ValueError, UnicodeDecodeError):
            return  # a damaged marker is reported where settings are read
        if not isinstance(info, dict):
            return
        if not info.get("schema"):
            info |= {"schema": store_schema(self.meta, self.schema), "schema_version": self.schema.version}
            atomic_write_text(marker, json.dumps(info, indent=1))
        elif self._opened and info["schema"] != self.schema_hash:
            raise SchemaMismatchError(
                f"{self.root}: migrated to data_schema {info['schema']} (revision {info.get('schema_version')}) since it "
                f"was opened at {self.schema_hash}; open it again (with an astra-lake of that revision) to write"
            )

    # -- committing -------------------------------------------------------------------------------
    def commit(
        self,
        table: str,
        adds: list[DataFile],
        removes: list[DataFile],
        operation: str,
        rows: int,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """Make staged files visible in one Delta commit and log it (hold :meth:`writing`); the lake version.

        If the commit does not land, the staged ``adds`` are deleted and the error is raised. If it lands
        but a step after it fails (its Delta checkpoint, its log line), :class:`CommittedWithErrorsError`
        says exactly what is stored."""
        store = self.store(table)
        try:
            if not store.exists():
                store.create()  # Delta version 0: the empty table (never a lake version of its own)
            before = store.latest_version()
        except BaseException:
            discard(store, adds)
            raise
        failure: BaseException | None = None
        try:
            version = store.commit(adds, removes, operation, {"rows": rows, **(metadata or {})})
        except BaseException as exc:
            try:
                landed = store.landed_after(before)
            except Exception:
                raise exc from None  # cannot tell: the staged files stay (vacuum lists them)
            if landed is None:
                discard(store, adds)  # nothing references them
                if isinstance(exc, OSError) and not isinstance(exc, AstraLakeError):
                    raise storage_error(exc, store.dataset / "_delta_log", f"cannot commit to {table}") from None
                raise
            version, failure = landed, exc
        done = f"{table}: {operation} of {rows:,} rows committed as Delta version {version}"
        try:
            lake_version = self.record(table, version, operation, rows)
        except Exception as exc:
            raise CommittedWithErrorsError(
                f"{done}, but its line in {self.log_path} could not be written ({cause(exc, self.log_path)}); "
                "the next write logs it: do not write the data again",
                table=table,
                operation=operation,
                rows=rows,
                delta_version=version,
                lake_version=None,
            ) from exc
        if failure is not None:
            raise CommittedWithErrorsError(
                f"{done} (lake version {lake_version}), but a step after the commit failed "
                f"({cause(failure, store.dataset / '_delta_log')}); do not write the data again",
                table=table,
                operation=operation,
                rows=rows,
                delta_version=version,
                lake_version=lake_version,
            ) from failure
        return lake_version

    # -- log ------------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.meta / "log.jsonl"

    def commits(self) -> list[Commit]:
        """The logged commits, oldest first (a torn last line is left out until the log is repaired)."""
        return self._read_log()[0]

    def _read_log(self) -> tuple[list[Commit], int]:
        """The commits of the log and the length in bytes of the lines they come from: anything after is a
        torn line (a writer died while appending it), dropped by the repair."""
        if not self.log_path.exists():
            return [], 0
        data = self.log_path.read_bytes()
        end = data.rfind(b"\n") + 1  # a tail without its newline is torn
        lines = data[:end].split(b"\n")[:-1]
        out: list[Commit] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(Commit(**json.loads(line)))
            except (ValueError, TypeError):
                if number == len(lines):  # torn, then appended to: also a tail to drop
                    return out, end - len(line) - 1
                raise StorageError(
                    f"{self.log_path}: line {number} is not a commit record; the lake log is damaged "
                    "(move it away: it is re-derived from the Delta logs)"
                ) from None
        return out, end

    def record(self, table: str, delta_version: int, operation: str, rows: int = 0) -> int:
        """Append a commit to the log (call with the writer lock held); returns the lake version."""
        version = len(self.commits()) + 1
        entry = Commit(version, table, delta_version, operation, _now(), rows, store_schema(self.meta, self.schema))
        line = (json.dumps(entry.__dict__) + "\n").encode()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.write(fd, line) != len(line):
                raise OSError(f"{self.log_path}: short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        self._committed.append(entry)
        return version

    def lagging(self) -> bool:
        """Whether the log has a torn tail or lacks Delta commits (a writer died, or is between the two)."""
        commits, good = self._read_log()
        if self.log_path.exists() and good != self.log_path.stat().st_size:
            return True
        logged: dict[str, int] = {}
        for c in commits:
            logged[c.table] = max(logged.get(c.table, 0), c.delta_version)
        return any(self.store(t).latest_version() > logged.get(t, 0) for t in self.existing_tables())

    def synced(self) -> None:
        """Repair the log before acting on it, if it needs repair (waits for a writer in progress)."""
        if self.lagging():
            with self.writing():
                pass

    def repair_log(self) -> None:
        """Drop a torn last line and log the Delta commits that have no line (call with the writer lock held).

        Commits a killed writer made are logged as ``recovered <operation>`` with their row count; Delta's
        own commits (vacuum) under their operation, in the order the commits were made."""
        commits, good = self._read_log()
        if self.log_path.exists() and good != self.log_path.stat().st_size:
            os.truncate(self.log_path, good)
        logged: dict[str, int] = {}
        for c in commits:
            logged[c.table] = max(logged.get(c.table, 0), c.delta_version)
        missing: list[tuple[int, str, int, str, int]] = []
        for table in self.existing_tables():
            store = self.store(table)
            latest = store.latest_version()
            if latest <= logged.get(table, 0):
                continue
            for info in store.delta().history(latest - logged.get(table, 0)):
                version = int(info["version"])
                if version > logged.get(table, 0):  # version 0 is the empty table, never logged
                    missing.append((int(info.get("timestamp", 0)), table, version, *_operation(info)))
        for _, table, version, operation, rows in sorted(missing):
            self.record(table, version, operation, rows)

    @property
    def version(self) -> int:
        return len(self.commits())

    def table_versions(self, lake_version: int | None = None) -> dict[str, int]:
        """The Delta version of every table at a lake version (latest when None)."""
        commits = self.commits()
        if lake_version is not None and not 0 <= lake_version <= len(commits):
            raise VersionNotFoundError(f"lake version {lake_version} does not exist (latest is {len(commits)})")
        out: dict[str, int] = {}
        for c in commits[: lake_version if lake_version is not None else len(commits)]:
            out[c.table] = c.delta_version
        return out

    # -- tags -----------------------------------------------------------------------------------
    @property
    def tags_path(self) -> Path:
        return self.meta / "tags.json"

    def tags(self) -> dict[str, dict[str, Any]]:
        return json.loads(self.tags_path.read_text()) if self.tags_path.exists() else {}

    def tag(self, name: str, lake_version: int | None = None, *, force: bool = False) -> dict[str, Any]:
        """Name a lake version (latest when None) so it stays readable forever (vacuum keeps it).

        The log is repaired first, so "latest" is what readers of the latest version see."""
        self.synced()
        with exclusive(self.meta / "tags.lock"):
            tags = self.tags()
            if name in tags and not force:
                raise TagExistsError(f"tag {name!r} already names lake version {tags[name]['lake_version']}; tags are immutable")
            version = self.version if lake_version is None else lake_version
            tables = self.table_versions(version)
            for table, delta_version in tables.items() if lake_version is not None else ():
                files = self.store(table).files(delta_version)
                gone = self.store(table).missing(files)
                if gone:  # a tag promises a readable version: refuse one vacuum has already deleted files of
                    raise VersionNotFoundError(
                        f"cannot tag lake version {version}: vacuum deleted {len(gone)} of the {len(files)} files of "
                        f"{table} (Delta version {delta_version}), e.g. {gone[0].path}; tag a version before vacuuming it"
                    )
            entry = {"lake_version": version, "tables": tables, "created": _now()}
            tags[name] = entry
            atomic_write_text(self.tags_path, json.dumps(tags, indent=1, sort_keys=True))
        return entry

    def resolve(self, version: int | str | None) -> dict[str, int] | None:
        """Table versions for a lake version number or a tag name (None: latest, read live)."""
        if version is None:
            return None
        if isinstance(version, str) and not version.isdigit():
            tags = self.tags()
            if version not in tags:
                raise VersionNotFoundError(f"no tag {version!r}; tags: {', '.join(sorted(tags)) or '(none)'}")
            return {k: int(v) for k, v in tags[version]["tables"].items()}
        return self.table_versions(int(version))


def _after(commits: list[Commit], error: Exception) -> CommittedWithErrorsError:
    """What a block committed before ``error`` (the attributes are those of the last commit)."""
    done = ", ".join(f"{c.table} {c.operation} of {c.rows:,} rows as lake version {c.lake_version}" for c in commits)
    last = commits[-1]
    return CommittedWithErrorsError(
        f"committed {done}; then {error}; the data is stored: do not write it again",
        table=last.table,
        operation=last.operation,
        rows=last.rows,
        delta_version=last.delta_version,
        lake_version=last.lake_version,
    )


def _operation(info: dict[str, Any]) -> tuple[str, int]:
    """(log operation, rows) of an unlogged Delta commit, from its commit information."""
    ours = info.get("astra_lake.operation")
    if ours is not None:
        return f"recovered {ours}", int(info.get("rows", 0) or 0)
    delta = str(info.get("operation", "unknown")).lower()
    return ("vacuum" if delta.startswith("vacuum") else f"recovered {delta}"), 0


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
