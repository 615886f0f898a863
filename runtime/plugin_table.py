"""The one plugin table (``plugins/plugin_table.json``): names, versions, namespace, I/O, attributes.

Read by the exporter (plugin nodes), the engine builder (plugin versions of a model must equal
this table's) and the engine sidecar check (an engine built against other plugin versions is
refused). Standard library only: the runtime imports neither torch nor onnx.

Where the JSON is found, first hit wins:

1. ``$MASKRT_PLUGIN_TABLE`` (a path; for tests and unusual installs);
2. ``<repository>/plugins/plugin_table.json`` -- a source checkout or an editable install, where
   this file is ``<repository>/runtime/plugin_table.py``;
3. ``plugin_table.json`` inside the ``maskrt`` package -- a wheel, which must ship the table as
   package data (``maskrt/plugin_table.json``).
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["PluginTableError", "load_plugin_table", "plugin_table_path", "plugin_versions"]

ENV_PLUGIN_TABLE = "MASKRT_PLUGIN_TABLE"
TABLE_NAME = "plugin_table.json"


class PluginTableError(ValueError):
    """The plugin table is missing or malformed."""


def _candidates() -> list[Path]:
    here = Path(__file__).resolve()
    out = []
    env = os.environ.get(ENV_PLUGIN_TABLE)
    if env:
        out.append(Path(env))
    out.append(here.parents[1] / "plugins" / TABLE_NAME)  # source checkout / editable install
    try:  # the installed package's data file (wheel)
        import maskrt

        out.append(Path(maskrt.__file__).resolve().parent / TABLE_NAME)
    except ImportError:  # pragma: no cover - maskrt is always importable where this module is
        pass
    out.append(here.parents[1] / TABLE_NAME)  # maskrt/runtime/.. = maskrt/ in a wheel
    return list(dict.fromkeys(out))  # without duplicates, in order


def plugin_table_path() -> Path:
    """The plugin table file this install uses (see the module docstring for the search order)."""
    env = os.environ.get(ENV_PLUGIN_TABLE)
    if env and not Path(env).is_file():
        raise PluginTableError(f"${ENV_PLUGIN_TABLE}={env} is not a file")
    for p in _candidates():
        if p.is_file():
            return p
    tried = ", ".join(str(p) for p in _candidates())
    raise PluginTableError(f"plugin table {TABLE_NAME} not found (tried {tried}); a wheel must ship it as "
                           f"package data maskrt/{TABLE_NAME}")


def _validate(table: Any, where: str) -> dict[str, Any]:
    def bad(why: str) -> PluginTableError:
        return PluginTableError(f"plugin table {where}: {why}")

    if not isinstance(table, dict):
        raise bad(f"must be a JSON object, got {type(table).__name__}")
    for key in ("namespace", "onnx_domain"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise bad(f"'{key}' must be a non-empty string")
    plugins = table.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise bad("'plugins' must be a non-empty list")
    seen: set[str] = set()
    for i, p in enumerate(plugins):
        if not isinstance(p, dict):
            raise bad(f"plugins[{i}] must be an object")
        name, version = p.get("name"), p.get("version")
        if not isinstance(name, str) or not name:
            raise bad(f"plugins[{i}].name must be a non-empty string")
        # NOTE: versions are strings ("1"), as TensorRT's plugin registry keys them.
        if not isinstance(version, str) or not version:
            raise bad(f"plugin {name}: 'version' must be a non-empty string, got {version!r}")
        if name in seen:
            raise bad(f"plugin {name} is listed twice")
        seen.add(name)
        if not isinstance(p.get("attributes", []), list):
            raise bad(f"plugin {name}: 'attributes' must be a list")
    return table


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> dict[str, Any]:
    del mtime_ns  # part of the cache key only: an edited file is read again
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise PluginTableError(f"cannot read plugin table {path}: {e.strerror or e}") from None
    try:
        table = json.loads(text)
    except json.JSONDecodeError as e:
        raise PluginTableError(f"plugin table {path} is not valid JSON ({e})") from None
    return _validate(table, path)


def load_plugin_table(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The plugin table as the JSON object it is (validated: namespace, onnx_domain, plugins
    with unique names and string versions). ``path`` overrides the search. Returns a fresh copy,
    so callers may modify it."""
    p = Path(path) if path is not None else plugin_table_path()
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as e:
        raise PluginTableError(f"cannot read plugin table {p}: {e.strerror or e}") from None
    return copy.deepcopy(_load(str(p), mtime))


def plugin_versions(table: dict[str, Any] | None = None) -> dict[str, str]:
    """``{plugin name: version}`` of ``table`` (default: this install's table)."""
    t = load_plugin_table() if table is None else table
    return {p["name"]: p["version"] for p in t["plugins"]}
