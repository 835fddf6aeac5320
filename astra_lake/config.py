"""The user configuration: where the lake is, and defaults for workers, compaction, queries and imports.

One TOML file, ``config.toml`` in the user config directory (platformdirs: ``$XDG_CONFIG_HOME/astra-lake/``,
by default ``~/.config/astra-lake/``; ``$ASTRA_LAKE_CONFIG`` names another file). Keys are dotted
(``lake``, ``ingest.workers``, ``query.threads``, ...), typed and documented below; the file holds only
the keys a user set, so changed defaults reach everyone else.

>>> Config().get("ingest.workers")
1
>>> Config({"compaction": {"retention_hours": 24}}).get("compaction.retention_hours")
24
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

from astra_lake.errors import ConfigError

APP = "astra-lake"


@dataclass(frozen=True)
class Key:
    """One setting: dotted name, type, default and what it is for."""

    name: str
    type: type
    default: Any
    help: str


KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("lake", str, "", "Lake directory used when neither --lake nor $ASTRA_LAKE is given (empty: ./astra-lake)"),
        Key("ingest.workers", int, 1, "Reader processes for `astra-lake ingest`"),
        Key("ingest.batch_files", int, 64, "Files per ingest commit (bounds memory)"),
        Key("compaction.auto_compact_min_files", int, 8, "A leaf with this many files after a write is merged (0: never)"),
        Key("compaction.retention_hours", int, 168, "`vacuum` keeps files that versions this recent still use"),
        Key("query.threads", int, 0, "DuckDB threads for queries (0: DuckDB's default, one per core)"),
        Key("query.memory_limit", str, "", "DuckDB memory limit for queries, e.g. '8GB' (empty: DuckDB's default)"),
        Key("query.version", str, "", "Lake version or tag read when a command names none (empty: the latest)"),
        Key("postgres.dsn", str, "", "Astra's database for `import-postgres` (postgresql://user@host:port/dbname)"),
        Key("postgres.schema", str, "", "Astra's schema in that database (empty: the connection's current schema)"),
        Key("postgres.commit_rows", int, 200_000, "Rows per lake commit during `import-postgres`"),
    )
}


def config_path() -> Path:
    """The configuration file: ``$ASTRA_LAKE_CONFIG`` if set, else ``config.toml`` in the user config dir."""
    named = os.environ.get("ASTRA_LAKE_CONFIG")
    return Path(named).expanduser() if named else platformdirs.user_config_path(APP, appauthor=False) / "config.toml"


class Config:
    """The settings a user made (``values``, nested as in the file) over the defaults of :data:`KEYS`."""

    def __init__(self, values: dict[str, Any] | None = None, source: str = "<memory>") -> None:
        self.values: dict[str, Any] = values or {}
        self.source = source
        for name, value in _flatten(self.values).items():
            _check(name, value, source)

    @classmethod
    def load(cls, path: Path | None = None) -> Config:
        """Read the file (missing: every default); a malformed file or setting is a one-line error."""
        path = path or config_path()
        if not path.exists():
            return cls({}, str(path))
        try:
            values = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls(values, str(path))

    def save(self, path: Path | None = None) -> Path:
        """Write the user's settings (only those, not the defaults); readable by the user only (it may hold a DSN)."""
        path = path or config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(tomli_w.dumps(self.values))
        tmp.chmod(0o600)
        tmp.replace(path)
        return path

    def get(self, name: str) -> Any:
        key = _key(name, self.source)
        node: Any = self.values
        for part in name.split("."):
            if not isinstance(node, dict) or part not in node:
                return key.default
            node = node[part]
        return node

    def is_set(self, name: str) -> bool:
        return name in _flatten(self.values)

    def set(self, name: str, text: str) -> Config:
        """A new configuration with ``name`` set from its text form (``"4"``, ``"true"``, ``"/data/lake"``)."""
        value = parse(name, text)
        values = _nested_copy(self.values)
        *parents, leaf = name.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        return Config(values, self.source)

    def unset(self, name: str) -> Config:
        """A new configuration in which ``name`` has its default again."""
        _key(name, self.source)
        values = _nested_copy(self.values)
        *parents, leaf = name.split(".")
        node = values
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
        return Config({k: v for k, v in values.items() if v != {}}, self.source)

    def items(self) -> list[tuple[Key, Any, bool]]:
        """Every key with its effective value and whether the user set it."""
        return [(k, self.get(k.name), self.is_set(k.name)) for k in KEYS.values()]


def parse(name: str, text: str) -> Any:
    """The typed value of a setting given as text; a clear error naming the key and the type expected."""
    key = _key(name, "astra-lake config set")
    value: Any = text
    if key.type is int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {text!r}") from None
    _check(name, value, "astra-lake config set")
    return value


def _key(name: str, source: str) -> Key:
    if name not in KEYS:
        raise ConfigError(f"{source}: unknown setting {name!r}; settings: {', '.join(KEYS)}")
    return KEYS[name]


def _check(name: str, value: Any, source: str) -> None:
    key = _key(name, source)
    if not isinstance(value, key.type) or isinstance(value, bool):
        raise ConfigError(f"{source}: {name} must be {key.type.__name__}, got {type(value).__name__} {value!r}")
    if isinstance(value, int) and value < 0:
        raise ConfigError(f"{source}: {name} must be >= 0, got {value}")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and name not in KEYS:
            out |= _flatten(v, name + ".")
        else:
            out[name] = v
    return out


def _nested_copy(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _nested_copy(v) if isinstance(v, dict) else v for k, v in values.items()}
