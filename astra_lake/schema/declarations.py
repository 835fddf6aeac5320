"""What the files of data_schema/ may say: typed pydantic models that refuse unknown keys.

A misspelled key (``bda: true``, ``unti: K``) is an error naming the file and the key, never a silently
dropped bit or unit. The loader (:mod:`astra_lake.schema.loader`) checks the cross-references (flag sets,
grids, column groups, flag names in rules) and compiles these declarations into :mod:`~astra_lake.schema.model`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from astra_lake.schema.model import TableKind
from astra_lake.schema.versions import version_to_int

COLUMN_TYPES = ("bool", "int16", "int32", "int64", "float32", "float64", "string", "binary", "timestamp", "list<float32>")
_FIXED = re.compile(r"^fixed<(int16|int32|int64|float32|float64),\d+>$")


def _as_text(value: Any) -> Any:
    """Versions written as YAML numbers (``since: 0.7``) are meant as text."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


Text = Annotated[str, BeforeValidator(_as_text)]


class Strict(BaseModel):
    """Base of every declaration: unknown keys are errors; declarations are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ColumnDecl(Strict):
    name: str
    type: str
    description: str = ""
    unit: str | None = None
    nullable: bool = True
    fill: str | int | float | bool | None = None
    hidden: bool = False
    minimum: StrictInt | StrictFloat | None = None  # inclusive value range, checked on write
    maximum: StrictInt | StrictFloat | None = None
    fits_card: str | None = None  # the header card of the DRP file (apStar, apVisit, ...) this column is read from
    renamed_from: str | None = None  # the column's earlier name: `astra-lake migrate` renames it

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in COLUMN_TYPES and not _FIXED.match(value):
            raise ValueError(f"unknown type {value!r}; expected one of {', '.join(COLUMN_TYPES)} or fixed<type,width>")
        return value

    @model_validator(mode="after")
    def _range(self) -> ColumnDecl:
        if self.minimum is None and self.maximum is None:
            return self
        if self.type not in ("int16", "int32", "int64", "float32", "float64"):
            raise ValueError(f"minimum/maximum need a numeric type, not {self.type}")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} > maximum {self.maximum}")
        return self


class FlagDecl(Strict):
    bit: int = Field(ge=0, le=63)
    name: str
    description: str | None = ""
    warn: bool = False
    bad: bool = False
    aliases: list[str] = []
    note: str = ""
    requires: str | None = None  # flag sets only: the parameter that must be true for this flag to exist


RuleDecl = Literal["marked", "any_bit"] | dict[Literal["all_of"], list[str]] | dict[Literal["any_of"], list[list[str]]]


def _rule_shape(value: Any) -> Any:
    if value is None or value in ("marked", "any_bit"):
        return value
    if isinstance(value, dict) and len(value) == 1 and ("all_of" in value or "any_of" in value):
        return value
    raise ValueError("expected marked, any_bit, {all_of: [flag, ...]} or {any_of: [[flag, ...], ...]}")


Rule = Annotated[RuleDecl | None, BeforeValidator(_rule_shape)]


class EditionDecl(Strict):
    """The flags and summary rules of a flag column for Astra versions [since, until)."""

    since: Text | None = None
    until: Text | None = None
    source: str = ""
    flags: list[FlagDecl] = []
    flag_warn: Rule = None
    flag_bad: Rule = None

    @field_validator("since", "until")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None:
            version_to_int(value)
        return value


class FlagColumnDecl(Strict):
    """A flag column: its own flags (inline or per edition), or a shared flag set with its parameters."""

    name: str
    summary: bool = False
    note: str = ""
    signed32_source: bool = False
    editions: list[EditionDecl] | None = None
    # one edition written inline:
    since: Text | None = None
    until: Text | None = None
    source: str = ""
    flags: list[FlagDecl] | None = None
    flag_warn: Rule = None
    flag_bad: Rule = None
    # a flag set from flag_sets.yaml:
    flag_set: str | None = None
    params: dict[str, str | bool | int] = {}
    extra_flags: list[FlagDecl] = []
    max_bit: int | None = Field(default=None, ge=0, le=63)
    warn: list[str] = []  # flag-set flags marked warn / bad
    bad: list[str] = []

    @model_validator(mode="after")
    def _one_source_of_flags(self) -> FlagColumnDecl:
        inline = self.flags is not None or self.flag_warn is not None or self.flag_bad is not None
        if self.editions is not None and (inline or self.since or self.until):
            raise ValueError("give either editions or the flags and rules of one edition, not both")
        if self.flag_set is not None and (self.flags is not None or self.editions is not None):
            raise ValueError("a flag_set column takes its flags from the set: no flags or editions of its own")
        if self.flag_set is None and (self.params or self.extra_flags or self.max_bit is not None or self.warn or self.bad):
            raise ValueError("params, extra_flags, max_bit, warn and bad belong to a flag_set column")
        return self

    def edition_decls(self) -> list[EditionDecl]:
        """Its editions; an inline one (or a flag set's) as a single edition."""
        if self.editions is not None:
            return self.editions
        inline = EditionDecl(
            since=self.since, until=self.until, source=self.source, flags=self.flags or [], flag_warn=self.flag_warn,
            flag_bad=self.flag_bad,
        )  # fmt: skip
        return [inline]


class PixelsDecl(Strict):
    grid: str
    arrays: str


class TableDecl(Strict):
    """One file of tables/: a table's kind, description, pixel grid, columns and flag columns."""

    name: str
    kind: TableKind
    description: str = ""
    notes: str = ""
    natural_key: list[str] = []
    pixels: PixelsDecl | None = None
    columns: list[ColumnDecl] = []
    flag_columns: list[FlagColumnDecl] = []


class KindDecl(Strict):
    groups: list[str]
    key: list[str]


class StorageDecl(Strict):
    healpix_order: int = Field(ge=0, le=29)
    row_group_rows: int = Field(gt=0)
    codec: Literal["zstd", "lz4", "snappy", "none"] = "zstd"


class GridDecl(Strict):
    kind: Literal["log_linear", "per_row"]
    npix: int = Field(gt=0)
    crval: float = 0.0
    cdelt: float = 0.0
    description: str = ""


class RolesDecl(Strict):
    """common.yaml ``roles``: the columns the lake mints, fills, stamps, keeps and carries."""

    minted: dict[TableKind, str]
    managed: list[str]
    timestamps: list[str]
    kept_on_replace: list[str]
    identity: list[str]


class CommonDecl(Strict):
    """common.yaml: column groups, roles, kinds, storage, grids and pixel-array sets."""

    schema_version: int
    column_groups: dict[str, list[ColumnDecl]]
    roles: RolesDecl
    kinds: dict[TableKind, KindDecl]
    storage: dict[TableKind, StorageDecl]
    grids: dict[str, GridDecl]
    pixel_sets: dict[str, list[ColumnDecl]]


class FlagSetDecl(Strict):
    description: str = ""
    parameters: list[str] = []
    flags: list[FlagDecl]


class FlagSetsDecl(RootModel[dict[str, FlagSetDecl]]):
    """flag_sets.yaml: flag definitions shared by several flag columns."""
