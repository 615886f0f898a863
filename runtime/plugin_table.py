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

``docs/plugins.md`` is this table rendered by :func:`markdown` (``python -m
maskrt.runtime.plugin_table > docs/plugins.md``; a test keeps the two equal).
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["PluginTableError", "load_plugin_table", "markdown", "plugin_table_path", "plugin_versions"]

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


def _cell(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text.replace("|", "\\|")


def markdown(table: dict[str, Any] | None = None) -> str:
    """``docs/plugins.md``: the plugin table (default: this install's) as markdown, one section per
    plugin with its inputs, outputs and attributes."""
    t = load_plugin_table() if table is None else table
    lines = ["# TensorRT plugins", "",
             "Generated from `plugins/plugin_table.json` (the one plugin table) by "
             "`python -m maskrt.runtime.plugin_table > docs/plugins.md`; do not edit by hand.", "",
             f"Plugin namespace `{t['namespace']}`, ONNX domain `{t['onnx_domain']}`. Each plugin has a math "
             "header shared by its CPU twin (`maskrt._native`) and its CUDA kernel, and one IPluginV3 wrapper "
             "in `libmaskrt_trt_plugins.so` (registered through `getCreators`: `trtexec --dynamicPlugins`, "
             "`IPluginRegistry::loadLibrary`). A change of semantics bumps the version.", "",
             "| plugin | version | source | what |", "|---|---|---|---|"]
    for p in t["plugins"]:
        folder = p.get("folder", "")
        lines.append(f"| [`{p['name']}`](#{p['name'].lower()}) | {p['version']} | "
                     f"[plugins/{folder}](../plugins/{folder}/README.md) | {_cell(p.get('summary', ''))} |")
    for p in t["plugins"]:
        lines += ["", f"## {p['name']}", "", f"Version {p['version']}. {p.get('summary', '')}", ""]
        for kind in ("inputs", "outputs"):
            rows = p.get(kind, [])
            if not rows:
                continue
            lines += [f"{kind.capitalize()}:", "", "| name | dtype | shape | meaning |", "|---|---|---|---|"]
            lines += [f"| `{r['name']}` | {_cell(r.get('dtype', ''))} | {_cell(r.get('shape', ''))} | "
                      f"{_cell(r.get('doc', ''))} |" for r in rows]
            lines.append("")
        attrs = p.get("attributes", [])
        if attrs:
            lines += ["Attributes:", "", "| name | type | default | meaning |", "|---|---|---|---|"]
            lines += [f"| `{a['name']}` | {a.get('type', '')} | `{_cell(a.get('default', ''))}` | "
                      f"{_cell(a.get('doc', ''))} |" for a in attrs]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
