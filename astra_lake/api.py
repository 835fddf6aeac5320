"""The public facade: open a lake, write to it, query it, read spectra, run kernels over it."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astra_lake.errors import InvalidArgumentError
from astra_lake.lake.catalog import Catalog, Commit
from astra_lake.lake.hats import write_sidecars
from astra_lake.lake.maintenance import check_retention
from astra_lake.lake.maintenance import compact as _compact
from astra_lake.lake.maintenance import vacuum as _vacuum
from astra_lake.lake.writer import Writer
from astra_lake.query import duck
from astra_lake.query.snapshot import Snapshot, check_columns

if TYPE_CHECKING:  # annotations only; polars, numba kernels and cdshealpix load with the methods that need them
    import duckdb
    import lsdb
    import polars as pl
    import pyarrow as pa

    from astra_lake.ingest.catalog_load import LoadReport
    from astra_lake.ingest.postgres import ImportSummary, Progress
    from astra_lake.kernels.tasks import BlockTask
    from astra_lake.lake.migrate import Plan as MigrationPlan
    from astra_lake.products.filters import ReleaseFilter
    from astra_lake.products.release import Manifest
    from astra_lake.query.spectra import SourceIndex, SourceKey, Spectra

Version = int | str | None


class Lake:
    """A lake on disk. Every write is one atomic, versioned commit; every read is pinned to a snapshot.

    >>> import tempfile
    >>> lake = Lake.init(tempfile.mkdtemp())
    >>> lake.version
    0
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.catalog = Catalog.open(Path(path))
        self._index: dict[tuple[int, str], SourceIndex] = {}
        self._latest: tuple[tuple[int, int], Snapshot] | None = None

    @classmethod
    def init(cls, path: str | os.PathLike[str], *, auto_compact_min_files: int | None = None) -> Lake:
        """Create an empty lake at ``path`` (no-op if one exists) and open it. ``auto_compact_min_files``: a
        leaf left with this many files by a write is merged (0: never; None: the lake's default, 8)."""
        if auto_compact_min_files is not None and auto_compact_min_files < 0:
            raise InvalidArgumentError(f"auto_compact_min_files must be >= 0, got {auto_compact_min_files}")
        settings = None if auto_compact_min_files is None else {"auto_compact_min_files": auto_compact_min_files}
        Catalog.create(Path(path), settings)
        return cls(path)

    @property
    def path(self) -> Path:
        return self.catalog.root

    @property
    def version(self) -> int:
        """The lake version: number of commits so far."""
        return self.catalog.version

    # -- writing --------------------------------------------------------------------------------
    def write(self, table: str, data: Any) -> int:
        """Append rows (refusing keys that exist) in one commit; returns its lake version.

        A leaf left with many files is then merged (see :meth:`compact`), as the next version."""
        with self.catalog.writing():
            version = Writer(self.catalog).append(table, data)
            write_sidecars(self.catalog.store(table))
        return version

    def upsert(self, table: str, data: Any, *, batch_rows: int = 250_000) -> int:
        """Insert or replace rows by key (results keep task_pk and created) in one commit; returns its
        lake version. A leaf left with many files is then merged, as the next version."""
        with self.catalog.writing():
            version = Writer(self.catalog).upsert(table, data, batch_rows=batch_rows)
            write_sidecars(self.catalog.store(table))
        return version

    def import_postgres(
        self,
        dsn: str,
        tables: list[str] | None = None,
        *,
        where: str | None = None,
        schema: str | None = None,
        commit_rows: int = 200_000,
        restart: bool = False,
        progress: Progress | None = None,
    ) -> ImportSummary:
        """Import Astra's PostgreSQL tables (``tables``: lake or Astra names; default all it has), keeping
        its identities; ``where`` filters every table (SQL). One commit per ``commit_rows`` rows; a killed
        import resumes after its last commit unless ``restart``."""
        from astra_lake.ingest.postgres import PostgresImport

        run = PostgresImport(self.catalog, dsn, schema=schema, where=where, commit_rows=commit_rows, progress=progress)
        return run.run(tables, restart=restart)

    def load_catalog(
        self,
        path: str | os.PathLike[str],
        *,
        key: str | None = None,
        radius_arcsec: float | None = None,
        table: str = "source",
        columns: list[str] | None = None,
        ra: str = "ra",
        dec: str = "dec",
    ) -> LoadReport:
        """Load a catalogue (Parquet, CSV, FITS, VOTable) into ``source`` columns or a ``catalog``-kind table,
        matching rows to sources by ``key`` (sdss_id, catalogid, gaia_dr3_source_id) or within
        ``radius_arcsec`` of the catalogue's ``ra``/``dec``; one commit. Unmatched rows are in the report."""
        from astra_lake.ingest.catalog_load import load_catalog as _load_catalog

        return _load_catalog(
            self.catalog, Path(path), key=key, radius_arcsec=radius_arcsec, table=table, columns=columns, ra=ra, dec=dec
        )

    # -- versions -------------------------------------------------------------------------------
    def versions(self) -> list[Commit]:
        """Every commit, oldest first (lake version, table, Delta version, operation, time, rows).

        A log left behind by a killed writer is repaired first."""
        self.catalog.synced()
        return self.catalog.commits()

    def tag(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Name a lake version (default: the latest, as readers see it); tags are immutable and survive vacuum."""
        return self.catalog.tag(name, version)

    def tags(self) -> dict[str, dict[str, Any]]:
        return self.catalog.tags()

    def compact(self, table: str | None = None) -> dict[str, dict[str, int]]:
        """Merge each leaf's files into one sorted file (one commit per table)."""
        out = {}
        with self.catalog.writing():
            for t in [table] if table else self.catalog.existing_tables():
                out[t] = _compact(self.catalog, t)
                write_sidecars(self.catalog.store(t))
        return out

    def vacuum(self, table: str | None = None, *, retention_hours: float = 168, dry_run: bool = True) -> dict[str, list[str]]:
        """Delete unreferenced files older than the retention, and files no version ever referenced (left
        by killed writers); a dry run (listing them) by default. Tagged versions stay readable."""
        check_retention(retention_hours)
        with self.catalog.writing():
            return {
                t: _vacuum(self.catalog, t, retention_hours=retention_hours, dry_run=dry_run)
                for t in ([table] if table else self.catalog.existing_tables())
            }

    def migrate(self, *, dry_run: bool = False) -> MigrationPlan:
        """Bring the lake to this package's data_schema/ (see :mod:`astra_lake.lake.migrate`); ``dry_run``
        only plans. Old versions and tags stay readable with their own schema; changes that would lose data
        are refused (:class:`~astra_lake.errors.SchemaMismatchError`)."""
        from astra_lake.lake.migrate import migrate

        plan = migrate(self.path, dry_run=dry_run)
        if plan.applied:
            self.catalog, self._index, self._latest = Catalog.open(self.path), {}, None
        return plan

    # -- reading --------------------------------------------------------------------------------
    def snapshot(self, version: Version = None) -> Snapshot:
        """The files of every table at a lake version number or tag (latest when None).

        The latest snapshot is reused until the lake log changes (any commit, by any process)."""
        if version is not None:
            return Snapshot(self.catalog.at(version), version)  # read with the schema that version was written with
        log = self.catalog.log_path
        key = (log.stat().st_mtime_ns, log.stat().st_size) if log.exists() else (0, 0)
        if self._latest is None or self._latest[0] != key:
            self._latest = (key, Snapshot(self.catalog, None))
        return self._latest[1]

    def connect(
        self,
        version: Version = None,
        *,
        external_access: bool = False,
        query: str | None = None,
        threads: int | None = None,
        memory_limit: str | None = None,
    ) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection: macros from sql/, one view per table over the snapshot.

        It cannot write into the lake: it reaches only the snapshot's files and refuses statements that
        write files (COPY, EXPORT, ATTACH, INSTALL, ...). ``external_access=True`` also reads your own
        files (``read_csv('mine.csv')``) and lets ``con.sql(q).write_parquet(path)`` write outside the lake.
        ``query``: make only the views this query names (a faster connection for that query alone);
        ``threads`` / ``memory_limit`` (``"8GB"``): DuckDB's settings (default: DuckDB's).
        """
        return duck.connect(
            self.snapshot(version), external_access=external_access, query=query, threads=threads, memory_limit=memory_limit
        )

    def sql(
        self,
        query: str,
        version: Version = None,
        *,
        external_access: bool = False,
        threads: int | None = None,
        memory_limit: str | None = None,
    ) -> pa.Table:
        """Run one SQL query on a snapshot and return an Arrow table (see :meth:`connect`)."""
        snap = self.snapshot(version)
        return duck.run(snap, query, external_access=external_access, threads=threads, memory_limit=memory_limit).to_arrow_table()

    def scan(self, table: str, version: Version = None) -> pl.LazyFrame:
        """A Polars LazyFrame of a table with flag_warn / flag_bad and named flag columns."""
        from astra_lake.query import polars_scan

        return polars_scan.scan(self.snapshot(version), table)

    def spectra(
        self,
        sdss_id: int | None = None,
        table: str | None = None,
        version: Version = None,
        *,
        source_pk: int | None = None,
        sdss4_apogee_id: str | None = None,
        catalogid: int | None = None,
    ) -> Spectra:
        """All spectra of one source in a spectrum table, as numpy arrays.

        The source is named by exactly one identifier: ``sdss_id``, or for sources without one (DR17-era
        and plate-era files) ``source_pk``, ``sdss4_apogee_id`` (e.g. ``"2M17335483-2753043"``) or
        ``catalogid``; an identifier several sources share returns the spectra of all of them
        (``meta["source_pk"]`` tells them apart).
        """
        if table is None:
            raise InvalidArgumentError("spectra() needs table=, a spectrum table such as apogee_star")
        from astra_lake.query.spectra import spectra_of

        snap = self.snapshot(version)
        index, value = self._source_index(snap, "spectra", (sdss_id, source_pk, sdss4_apogee_id, catalogid))
        return spectra_of(snap, index, value, table)

    def lookup(
        self,
        table: str,
        sdss_id: int | None = None,
        *,
        source_pk: int | None = None,
        sdss4_apogee_id: str | None = None,
        catalogid: int | None = None,
        columns: list[str] | None = None,
        version: Version = None,
    ) -> pa.Table:
        """One source's rows of any table (a pipeline's results, a spectrum table, ``source``) as Arrow,
        with the columns of its SQL view (``flag_warn``, ``flag_bad``, named flags) or ``columns``.

        The source is named as in :meth:`spectra`. Only the row groups that hold the source are read (the
        SQL ``WHERE sdss_id = ...`` scans the whole table: rows are sorted by sky position).
        """
        from astra_lake.query.polars_scan import with_flags
        from astra_lake.query.spectra import rows_of
        from astra_lake.schema.views import view_columns

        snap = self.snapshot(version)
        tbl = snap.catalog.schema.table(table)
        wanted = columns or view_columns(tbl)
        check_columns(table, wanted, list(dict.fromkeys([*view_columns(tbl), *tbl.column_names])))  # hidden ones too
        names = set(tbl.column_names)
        derived = [c for c in wanted if c not in names]
        inputs = [c for c in (tbl.summary_column.name, "v_astra") if c in names] if tbl.summary_column and derived else []
        index, value = self._source_index(snap, "lookup", (sdss_id, source_pk, sdss4_apogee_id, catalogid))
        rows = rows_of(snap, index, value, table, list(dict.fromkeys([c for c in wanted if c in names] + inputs)))
        if not derived:
            return rows.select(wanted)
        import polars as pl
        import pyarrow as pa

        lf = pl.from_arrow(rows.select(inputs)).lazy()  # type: ignore[union-attr]
        flags = with_flags(lf, snap, table).select(derived).collect().to_arrow()
        return pa.Table.from_arrays([(flags if c in derived else rows).column(c) for c in wanted], names=wanted)

    def _source_index(
        self,
        snap: Snapshot,
        caller: str,
        ids: tuple[int | None, int | None, str | None, int | None],
    ) -> tuple[SourceIndex, int | str]:
        """The snapshot's index of the one identifier given (kept while the source table is unchanged)."""
        from astra_lake.query.spectra import SourceIndex

        keys: tuple[SourceKey, ...] = ("sdss_id", "source_pk", "sdss4_apogee_id", "catalogid")
        given = dict(zip(keys, ids, strict=True))
        named = [(k, v) for k, v in given.items() if v is not None]
        if len(named) != 1:
            raise InvalidArgumentError(f"{caller}() takes exactly one of {', '.join(given)}; got {len(named)}")
        key, value = named[0]
        stamp = ((snap.table_versions or {}).get("source", -1), key)
        if stamp not in self._index:
            self._index = {k: v for k, v in self._index.items() if k[0] == stamp[0]} | {stamp: SourceIndex(snap, key)}
        return self._index[stamp], value

    def spectra_batches(
        self,
        table: str,
        *,
        where: str | None = None,
        columns: list[str] | None = None,
        batch_rows: int = 1024,
        threads: int | None = None,
        version: Version = None,
    ) -> Iterator[Spectra]:
        """Every spectrum of a table (or those ``where`` selects) as blocks of numpy arrays: the full-scan
        path, decoded ahead of the caller on ``threads`` threads. Each block is a :class:`Spectra` of
        ``batch_rows`` rows, the last one fewer (``block.flux.shape == (n, npix)``); ``columns`` picks its
        metadata.
        """
        from astra_lake.query.batches import spectra_batches

        return spectra_batches(
            self.snapshot(version), table, where=where, columns=columns, batch_rows=batch_rows, threads=threads
        )

    def cone(
        self,
        ra: float,
        dec: float,
        radius_deg: float,
        table: str = "source",
        columns: list[str] | None = None,
        version: Version = None,
    ) -> pa.Table:
        """Rows of a table within a cone (partitions and row groups outside it are never read), with a
        ``separation_deg`` column. A bad position, radius or column raises :class:`InvalidArgumentError`."""
        from astra_lake.query.spectra import cone

        return cone(self.snapshot(version), table, ra, dec, radius_deg, columns)

    def lsdb(self, table: str, version: Version = None, *, columns: list[str] | None = None) -> lsdb.Catalog:
        """A table at a version or tag as a lazy ``lsdb.Catalog`` over exactly that snapshot's files, with
        flags and ``ra``/``dec`` (of the source, for spectra and results): crossmatch it, cone-search it."""
        from astra_lake.query.lsdb_open import open_lsdb

        return open_lsdb(self.snapshot(version), table, columns)

    def apply(
        self,
        task: BlockTask,
        *,
        table: str,
        output: str,
        where: str | None = None,
        v_astra: str = "0.1.0",
        version: Version = None,
        progress: bool = False,
        client: Any = None,
    ) -> int:
        """Run a kernel task over a spectrum table, block by block, into a pixel table; one commit.

        ``where`` is a SQL predicate on the input table (e.g. ``"snr > 50"``). Memory is bounded by the
        Parquet batch size; flux/ivar arrive as zero-copy numpy views of the Arrow buffers. ``client``:
        a ``distributed.Client`` whose workers compute the blocks (this process still makes the commit).
        """
        from astra_lake.pipelines.apply import run_apply

        snap = self.snapshot(version)
        with _connected(client) as connected, self.catalog.writing():
            new = run_apply(
                self.catalog,
                snap,
                task,
                table=table,
                output=output,
                where=where,
                v_astra=v_astra,
                progress=progress,
                client=connected,
            )
            write_sidecars(self.catalog.store(output))
        return new

    def run(
        self,
        pipeline: Any,
        *,
        where: str | None = None,
        version: Version = None,
        workers: int | None = None,
        table: str | None = None,
        force: bool = False,
        v_astra: str | None = None,
        tag: str = "",
        batch_rows: int = 256,
        progress: bool = False,
        client: Any = None,
        **options: Any,
    ) -> Any:
        """Run a pipeline (its name, e.g. ``"the_payne"``, or a ``Pipeline``) over its input tables (or
        ``table``), reading snapshot ``version``; skips spectra that already have a result of this
        ``v_astra`` major.minor newer than their input unless ``force``; commits every ``batch_rows``
        results; returns the run's summary (``.message`` says what it did). ``options`` go to the
        pipeline (e.g. ``model="NN.npz"``). See :mod:`astra_lake.pipelines.framework`. ``client``: a
        ``distributed.Client`` (or ``"local"`` / a scheduler address) whose workers process the blocks,
        while this process commits (:mod:`astra_lake.pipelines.distributed`).
        """
        from astra_lake.pipelines.framework import get
        from astra_lake.pipelines.run import run_pipeline

        with _connected(client) as connected:
            return run_pipeline(
                self.catalog,
                self.snapshot(version),
                get(pipeline) if isinstance(pipeline, str) else pipeline,
                tables=[table] if table else None,
                where=where,
                v_astra=v_astra,
                force=force,
                workers=workers,
                batch_rows=batch_rows,
                tag=tag,
                options=options,
                progress=progress,
                client=connected,
            )

    def release(
        self,
        name: str,
        *,
        tag: str,
        out: str | os.PathLike[str],
        formats: Iterable[str] = ("fits", "parquet", "hats"),
        release_filter: str | os.PathLike[str] | ReleaseFilter | None = None,
        v_astra: str | None = None,
        progress: bool = False,
        client: Any = None,
    ) -> Manifest:
        """Write release ``name`` of a tag into the new folder ``out``: FITS products per the SDSS datamodel,
        Parquet and HATS catalogs of every table, and ``manifest.json`` (sizes, sha256, table versions).
        The same tag always gives byte-identical files; ``release_filter`` (a YAML file or
        :class:`~astra_lake.products.filters.ReleaseFilter`) leaves rows and columns out. ``client``: as
        for :meth:`run` (workers write the summary and table files)."""
        from astra_lake.products.filters import ReleaseFilter
        from astra_lake.products.release import create_release

        if release_filter is not None and not isinstance(release_filter, ReleaseFilter):
            release_filter = ReleaseFilter.read(Path(release_filter))
        with _connected(client) as connected:
            return create_release(
                self.catalog.at(tag),  # the tag's files, read with the data_schema they were written with
                name,
                tag=tag,
                out=Path(out),
                formats=formats,
                release_filter=release_filter,
                v_astra=v_astra,
                progress=progress,
                client=connected,
            )

    def info(self) -> dict[str, Any]:
        """Tables (rows, files, bytes, Delta version), lake version, tags and the data_schema the lake is at
        (the log repaired first)."""
        self.catalog.synced()
        tables = {}
        for t in self.catalog.existing_tables():
            store = self.catalog.store(t)
            files = store.files()
            tables[t] = {
                "rows": sum(f.num_rows for f in files),
                "files": len(files),
                "bytes": sum(f.size for f in files),
                "delta_version": store.latest_version(),
            }
        schema = {"hash": self.catalog.schema_hash, "revision": self.catalog.schema.version}
        if self.catalog.pending_migration:
            schema["package_hash"] = self.catalog.pending_migration  # `astra-lake migrate` adopts it
        return {"path": str(self.path), "version": self.version, "tables": tables, "tags": self.tags(), "schema": schema}


@contextmanager
def _connected(client: Any) -> Iterator[Any]:
    """The ``client`` argument: a ``distributed.Client`` as given, or one opened for the call from an address
    (``"local"``: a LocalCluster; ``"tcp://host:8786"``) and closed after it."""
    if not isinstance(client, str):
        yield client
        return
    from astra_lake.pipelines.distributed import client_for

    with client_for(client) as opened:
        yield opened


def connect(path: str | os.PathLike[str], version: Version = None, *, external_access: bool = False) -> duckdb.DuckDBPyConnection:
    """``astra_lake.connect(path, version | tag)``: a read-only DuckDB connection over a pinned snapshot."""
    return Lake(path).connect(version, external_access=external_access)


def scan(path: str | os.PathLike[str], table: str, version: Version = None) -> pl.LazyFrame:
    """``astra_lake.scan(path, table)``: a Polars LazyFrame over a pinned snapshot."""
    return Lake(path).scan(table, version)
