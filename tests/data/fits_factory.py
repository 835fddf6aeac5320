"""Format-faithful synthetic mwmStar / mwmVisit / astraAll* / mwmAll* files, built from the column
names, types and HDU order of the official SDSS datamodel (extracted to datamodel_columns.json).

:func:`make` writes small files with astropy; :func:`make_streamed` writes the same layout at any size
chunk by chunk (the benchmark's million-row summary files), with a distinct spectrum per row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

SPEC = json.loads((Path(__file__).parent / "datamodel_columns.json").read_text())
WIDTH = {"BOSS": 4648, "APOGEE": 8575}
PIXEL_ARRAYS = {"wavelength", "flux", "ivar", "pixel_flags", "continuum", "nmf_rectified_model_flux", "wresl"}
POSITIONS = {"ra": (0.0, 360.0), "dec": (-90.0, 90.0)}  # uniform on the declared ranges


def _values(
    name: str, dtype: str, n: int, instrument: str, rng: np.random.Generator, given: dict[str, Any]
) -> tuple[str, np.ndarray]:
    """(FITS TFORM, values) of one column: the given values, else plausible random ones."""
    v = np.asarray(given[name]) if name in given else None
    if dtype.startswith("char["):
        width = int(dtype[5:-1])
        return f"{width}A", v if v is not None else np.array([f"x{i}"[:width] for i in range(n)])
    if dtype.startswith("float32["):
        declared = int(dtype[8:-1])
        width = (WIDTH[instrument] if name in PIXEL_ARRAYS or declared == 0 else declared) if n else 0
        if v is None:
            if name == "ivar":
                v = np.full((n, width), 100.0, np.float32)
            elif name == "wavelength":
                v = np.tile(
                    10 ** ((4.179, 3.5523)[instrument == "BOSS"] + (6e-6, 1e-4)[instrument == "BOSS"] * np.arange(width)), (n, 1)
                )
            elif name == "pixel_flags":
                v = np.zeros((n, width), np.float32)
            else:
                v = (1 + 0.01 * rng.normal(size=(n, width))).astype(np.float32)
        return f"{width}E", np.asarray(v, np.float32).reshape(n, width)
    if dtype.startswith("bool["):
        width = int(dtype[5:-1])
        return f"{width}L", v if v is not None else rng.random((n, width)) < 0.1
    fmt = {"int64": "K", "int32": "J", "float32": "E", "bool": "L"}[dtype]
    if v is None:
        if name in POSITIONS and fmt == "E":
            v = rng.uniform(*POSITIONS[name], n).astype(np.float32)
        else:
            v = {
                "K": lambda: rng.integers(0, 1000, n),
                "J": lambda: rng.integers(0, 100, n),
                "E": lambda: rng.normal(size=n).astype(np.float32),
                "L": lambda: rng.random(n) < 0.5,
            }[fmt]()
    return fmt, v


def _instrument(kind: str, index: int, name: str) -> str:
    return "BOSS" if ("BOSS" in name or (kind.startswith(("astra", "mwmAll")) and index == 1)) else "APOGEE"


def _primary(kind: str, spec: dict[str, Any], sdss_id: int, ra: float, dec: float, pipeline: str) -> fits.PrimaryHDU:
    primary = fits.PrimaryHDU()
    for key, val in spec["hdus"][0]["header"]:
        if key not in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND"):
            primary.header[key] = val
    if not kind.startswith("mwmAll"):
        primary.header["SDSS_ID"] = sdss_id
        primary.header["RA"] = ra
        primary.header["DEC"] = dec
    primary.header["V_ASTRA"] = "0.6.0"
    if kind.startswith("astraAll"):
        primary.header["PIPELINE"] = pipeline
    return primary


def make(
    kind: str,
    path: Path,
    rows: dict[str, int],
    *,
    sdss_id: int = 4242,
    ra: float = 120.5,
    dec: float = -33.25,
    seed: int = 0,
    values: dict[str, dict[str, Any]] | None = None,
    pipeline: str = "ASPCAP",
) -> Path:
    """Write ``kind`` (a key of datamodel_columns.json) with ``rows[hdu name]`` rows per HDU (unnamed
    HDUs are ``HDU1``, ``HDU2``)."""
    rng = np.random.default_rng(seed)
    spec = SPEC[kind]
    values = values or {}
    hdus: list[Any] = [_primary(kind, spec, sdss_id, ra, dec, pipeline)]
    for i, h in enumerate(spec["hdus"][1:], start=1):
        name = h["name"] or f"HDU{i}"
        instrument = _instrument(kind, i, name)
        n = rows.get(name, 0)
        given = dict(values.get(name, {}))
        given.setdefault("sdss_id", np.full(n, sdss_id))
        given.setdefault("v_astra", np.array(["0.6.0"] * n))
        cols = []
        for c, t in h["columns"]:
            fmt, data = _values(c, t, n, instrument, rng, given)
            cols.append(fits.Column(name=c, format=fmt, array=data if n else None))
        hdu = fits.BinTableHDU.from_columns(cols, nrows=n)
        if h["name"]:
            hdu.header["EXTNAME"] = h["name"]
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def unique_rows(kind: str, hdu: int, first: int, n: int) -> dict[str, np.ndarray]:
    """Values that make rows ``first .. first + n`` of an HDU distinct sources and spectra (sdss_id,
    natural keys), on the sky, and of one release."""
    ids = np.arange(first, first + n, dtype=np.int64) + 1 + hdu * 10**8
    out: dict[str, Any] = {
        "sdss_id": ids,
        "catalogid": ids + 10**10,
        "release": np.array(["dr19"] * n),
        "telescope": np.array(["apo25m"] * n),
        "apred": np.array(["1.3"] * n),
        "apstar": np.array(["stars"] * n),
        "run2d": np.array(["v6_1_3"] * n),
        "obj": np.char.add("2M", ids.astype("U12")),
        "v_astra": np.array(["0.6.0"] * n),
    }
    if "Visit" in kind:
        out |= {
            "date_obs": np.datetime_as_string(np.datetime64("2021-01-01T00:00:00") + ids.astype("m8[s]") * 61, unit="s"),
            "mjd": (59000 + ids % 3000).astype(np.int32),
            "plate": np.char.add("p", (ids // 3000).astype("U12")),
            "fiber": (ids % 300).astype(np.int32),
            "fieldid": (ids // 3000).astype(np.int32),
            "fiberid": (ids % 1000).astype(np.int32),
        }
    return out


def make_streamed(
    kind: str, path: Path, rows: dict[int, int], *, seed: int = 0, chunk_rows: int = 20_000, pipeline: str = "ASPCAP"
) -> Path:
    """The layout of :func:`make` with ``rows[hdu index]`` rows, written ``chunk_rows`` at a time straight
    into the file (bounded memory at any size); rows are distinct (:func:`unique_rows`)."""
    rng = np.random.default_rng(seed)
    spec = SPEC[kind]
    with open(path, "wb") as fh:
        fh.write(_padded(_primary(kind, spec, 0, 0.0, 0.0, pipeline).header.tostring().encode()))
        for i, h in enumerate(spec["hdus"][1:], start=1):
            instrument = _instrument(kind, i, h["name"])
            n = rows.get(i, 0)
            probe = {c: _values(c, t, 1, instrument, rng, {})[0] for c, t in h["columns"]}
            template = fits.BinTableHDU.from_columns([fits.Column(name=c, format=f) for c, f in probe.items()], nrows=0)
            if h["name"]:
                template.header["EXTNAME"] = h["name"]
            template.header["NAXIS2"] = n
            fh.write(_padded(template.header.tostring().encode()))
            dtype = template.columns.dtype.newbyteorder(">")
            written = 0
            for first in range(0, n, chunk_rows):
                m = min(chunk_rows, n - first)
                given = unique_rows(kind, i, first, m)
                rec = np.zeros(m, dtype)
                for c, t in h["columns"]:
                    fmt, data = _values(c, t, m, instrument, rng, given)
                    data = np.where(data, ord("T"), ord("F")) if fmt.endswith("L") else data
                    rec[c] = np.asarray(data).reshape(rec[c].shape)
                fh.write(rec.tobytes())
                written += rec.nbytes
            fh.write(b"\0" * (-written % 2880))
    return path


def _padded(header: bytes) -> bytes:
    return header + b" " * (-len(header) % 2880)


# -- reduction-pipeline summaries (spAll, allStar, allVisit; layouts from data_schema/products/drp/) ----
DRP_TFORM = {"int64": "K", "int63": "K", "int32": "J", "int16": "I", "float32": "E", "float64": "D", "bool": "L"}


def drp_columns(kind: str) -> list[tuple[str, str]]:
    """(FITS name, datamodel type) of HDU 1 of a DRP file, in the official order. ``int63`` (a typo of
    allStar's brightneicount in the datamodel) is int64. mwmTargets: the lake's own product's columns."""
    root = Path(__file__).resolve().parents[2] / "data_schema" / "products"
    if kind == "mwmTargets":
        import yaml

        raw = yaml.safe_load((root / "generated" / "mwmTargets.yaml").read_text())
        codes = {"K": "int64", "J": "int32", "E": "float32", "D": "float64", "A": "char[24]", "L": "bool[69]"}
        types = {"ra": "float64", "dec": "float64", "l": "float64", "b": "float64"}
        return [(c[0], types.get(c[0], codes[c[1]])) for c in raw["hdus"][0]["columns"]]
    extract = json.loads((root / "drp" / f"{kind}.json").read_text())
    return [(c[0], c[1]) for c in extract["hdus"][1]["columns"]]


def make_drp(
    kind: str,
    path: Path,
    n: int,
    *,
    values: dict[str, Any] | None = None,
    seed: int = 0,
    header: dict[str, Any] | None = None,
    extname: str | None = None,
    tnull: dict[str, int] | None = None,
) -> Path:
    """A DRP summary file with ``n`` rows in HDU 1 laid out as its datamodel declares (names in the
    official case, types, array widths); ``values`` (case-blind names) fill columns, the rest random;
    ``tnull`` gives integer columns a TNULL value (as spAll declares -999 or 0 for "no value")."""
    nulls = {k.lower(): v for k, v in (tnull or {}).items()}
    rng = np.random.default_rng(seed)
    given = {k.lower(): np.asarray(v) for k, v in (values or {}).items()}
    cols = []
    for name, dtype in drp_columns(kind):
        base, _, width = dtype.partition("[")
        v = given.get(name.lower())
        if base == "char":
            w = int(width[:-1])  # the declared width (of one release), widened to fit given values
            w = max([w, *(len(str(x)) for x in v)]) if v is not None else w
            data = v if v is not None else np.array([f"x{i}"[:w] for i in range(n)])
            cols.append(fits.Column(name=name, format=f"{w}A", array=data))
            continue
        code = DRP_TFORM[base]
        repeat = int(width[:-1]) if width else 1
        if v is None:
            shape = (n, repeat) if width else (n,)
            v = {
                "K": lambda s: rng.integers(1, 1000, s),
                "J": lambda s: rng.integers(1, 100, s),
                "I": lambda s: rng.integers(1, 50, s).astype(np.int16),
                "E": lambda s: rng.normal(size=s).astype(np.float32),
                "D": lambda s: rng.uniform(10, 80, s),
                "L": lambda s: rng.random(s) < 0.1,
            }[code](shape)
        fmt = f"{repeat}{code}" if width else code
        cols.append(fits.Column(name=name, format=fmt, array=v, null=nulls.get(name.lower())))
    primary = fits.PrimaryHDU()
    for k, val in (header or {}).items():
        primary.header[k] = val
    table = fits.BinTableHDU.from_columns(cols, nrows=n)
    if extname:
        table.header["EXTNAME"] = extname
    fits.HDUList([primary, table]).writeto(path, overwrite=True)
    return path


def make_drp_streamed(kind: str, path: Path, n: int, *, seed: int = 0, chunk_rows: int = 20_000) -> Path:
    """The layout of :func:`make_drp` with ``n`` rows, written ``chunk_rows`` at a time (bounded memory);
    rows are distinct sources and spectra (sdss_id, catalogid, field/MJD), on the sky."""
    rng = np.random.default_rng(seed)
    columns = drp_columns(kind)
    formats = {}
    for name, dtype in columns:
        base, _, width = dtype.partition("[")
        formats[name] = f"{width[:-1]}A" if base == "char" else (f"{width[:-1]}" if width else "") + DRP_TFORM[base]
    template = fits.BinTableHDU.from_columns([fits.Column(name=c, format=f) for c, f in formats.items()], nrows=0)
    template.header["NAXIS2"] = n
    dtype = template.columns.dtype.newbyteorder(">")
    with open(path, "wb") as fh:
        fh.write(_padded(fits.PrimaryHDU().header.tostring().encode()))
        fh.write(_padded(template.header.tostring().encode()))
        for first in range(0, n, chunk_rows):
            m = min(chunk_rows, n - first)
            i = np.arange(first, first + m, dtype=np.int64)
            given = {
                "sdss_id": 10**8 + i,
                "catalogid": 10**15 + i,
                "field": 1 + i // 500,
                "mjd": 60000 + i % 500,
                "run2d": np.full(m, "v6_1_3"),
                "racat": rng.uniform(0, 360, m),
                "deccat": rng.uniform(-90, 90, m),
                "ra": rng.uniform(0, 360, m),
                "dec": rng.uniform(-90, 90, m),
                "apogee_id": np.char.add("2M", (10**8 + i).astype(str)),
            }
            rec = np.zeros(m, dtype)
            for name, fmt in formats.items():
                field = rec[name]
                if name.lower() in given:
                    field[...] = given[name.lower()]
                elif fmt.endswith("L"):
                    field[...] = np.where(rng.random(field.shape) < 0.1, ord("T"), ord("F"))
                elif fmt.endswith(("E", "D")):
                    field[...] = rng.normal(size=field.shape)
                elif not fmt.endswith("A"):
                    field[...] = rng.integers(1, 100, field.shape)
                else:
                    field[...] = b"x"
            fh.write(rec.tobytes())
        fh.write(b"\0" * (-(n * dtype.itemsize) % 2880))
    return path
