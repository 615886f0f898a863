"""The one plugin table (plugins/plugin_table.json) and the code built from it cannot drift.

* The table is well formed: unique plugin names (C identifiers: they are ONNX op types and
  TensorRT plugin names), versions as digit strings, attribute types in {int, ints, float,
  floats, string}, defaults of the declared type.
* Every plugin has its folder, a README naming it, a TensorRT creator class built on its table
  entry, and register.cpp registers the creators from the table (X-macro), nothing by hand.
* The C++ header CMake generates from the table (plugins/tensorrt/plugin_table.cmake, run here in
  script mode: no CUDA/TensorRT needed) compiles warning-free and holds exactly the table's
  names, versions, attribute order, types and defaults; malformed tables stop the generator.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE_PATH = ROOT / "plugins" / "plugin_table.json"
GENERATOR = ROOT / "plugins" / "tensorrt" / "plugin_table.cmake"
REGISTER = ROOT / "plugins" / "tensorrt" / "register.cpp"
ATTR_TYPES = ("int", "ints", "float", "floats", "string")
# Order of maskrt::plugin_table::AttrType in the generated header.
ATTR_TYPE_CODES = {t: i for i, t in enumerate(ATTR_TYPES)}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ATTR_NAME = re.compile(r"[a-z_][a-z0-9_]*")
INT32 = (-(2**31), 2**31 - 1)


def load_table() -> dict:
    return json.loads(TABLE_PATH.read_text())


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and INT32[0] <= x <= INT32[1]


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def table_problems(table) -> list[str]:
    """Everything wrong with a parsed table ([] if it is well formed)."""
    problems = []
    if not isinstance(table, dict):
        return ["the table must be a JSON object"]
    for key in ("namespace", "onnx_domain"):
        if not isinstance(table.get(key), str) or not IDENTIFIER.fullmatch(table.get(key, "") or ""):
            problems.append(f"'{key}' must be an identifier string")
    plugins = table.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        return problems + ["'plugins' must be a non-empty list"]
    names = [p.get("name") for p in plugins if isinstance(p, dict)]
    for name in {n for n in names if names.count(n) > 1}:
        problems.append(f"plugin name {name} appears more than once")
    for i, p in enumerate(plugins):
        if not isinstance(p, dict):
            problems.append(f"plugins[{i}] must be an object")
            continue
        where = p.get("name", f"plugins[{i}]")
        if not isinstance(p.get("name"), str) or not IDENTIFIER.fullmatch(p["name"]):
            problems.append(f"{where}: name must be a C identifier")
        if not isinstance(p.get("version"), str) or not re.fullmatch(r"[0-9]+", p["version"]):
            problems.append(f"{where}: version must be a string of digits")
        if not isinstance(p.get("folder"), str) or not IDENTIFIER.fullmatch(p["folder"]):
            problems.append(f"{where}: folder must be a folder name under plugins/")
        for io in ("inputs", "outputs"):
            entries = p.get(io)
            if not isinstance(entries, list) or not entries:
                problems.append(f"{where}: '{io}' must be a non-empty list")
                continue
            for e in entries:
                if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in ("name", "dtype", "shape")):
                    problems.append(f"{where}: every entry of '{io}' needs string name, dtype and shape")
        attrs = p.get("attributes")
        if not isinstance(attrs, list):
            problems.append(f"{where}: 'attributes' must be a list")
            continue
        attr_names = [a.get("name") for a in attrs if isinstance(a, dict)]
        for a in attrs:
            if not isinstance(a, dict):
                problems.append(f"{where}: every attribute must be an object")
                continue
            an, at = a.get("name"), a.get("type")
            aw = f"{where}.{an}"
            if not isinstance(an, str) or not ATTR_NAME.fullmatch(an):
                problems.append(f"{aw}: attribute names are lower_snake_case identifiers")
            if attr_names.count(an) > 1 or an in ("plugin_version", "plugin_namespace"):
                problems.append(f"{aw}: duplicate or reserved attribute name")
            if at not in ATTR_TYPES:
                problems.append(f"{aw}: type {at!r} is not one of {ATTR_TYPES}")
                continue
            if "default" not in a:
                problems.append(f"{aw}: no default")
                continue
            d = a["default"]
            ok = {
                "int": _is_int(d),
                "float": _is_number(d),
                "ints": isinstance(d, list) and all(_is_int(x) for x in d),
                "floats": isinstance(d, list) and all(_is_number(x) for x in d),
                "string": isinstance(d, str),
            }[at]
            if not ok:
                problems.append(f"{aw}: default {d!r} is not of type {at}")
    return problems


def test_table_is_well_formed():
    assert table_problems(load_table()) == []


# Each mutation of the real table, the words the Python check and the CMake generator must say.
MUTATIONS = {
    "unknown attribute type": (lambda t: t["plugins"][0]["attributes"][0].update(type="double"), "type"),
    "int default not an integer": (lambda t: t["plugins"][0]["attributes"][0].update(default=7.5), "integer"),
    "duplicate plugin name": (lambda t: t["plugins"][1].update(name=t["plugins"][0]["name"]), "twice"),
    "numeric version": (lambda t: t["plugins"][0].update(version=1), "version"),
    "ints default not a list": (lambda t: t["plugins"][0]["attributes"][3].update(default=4), "array"),
    "duplicate attribute": (
        lambda t: t["plugins"][2]["attributes"].append(dict(t["plugins"][2]["attributes"][0])),
        "duplicate",
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_well_formedness_check_catches(mutation):
    table = copy.deepcopy(load_table())
    MUTATIONS[mutation][0](table)
    assert table_problems(table), f"{mutation} not detected"


@pytest.mark.parametrize("plugin", load_table()["plugins"], ids=lambda p: p["name"])
def test_plugin_has_folder_readme_and_creator(plugin):
    name, folder = plugin["name"], ROOT / "plugins" / plugin["folder"]
    assert folder.is_dir(), f"{name}: folder plugins/{plugin['folder']} missing"
    readme = folder / "README.md"
    assert readme.is_file(), f"{name}: plugins/{plugin['folder']}/README.md missing"
    assert name in readme.read_text(), f"{name}: not named in plugins/{plugin['folder']}/README.md"
    # The creator: class <Name>Creator built on the table entry plugin_table::<Name>.
    headers = {h: h.read_text() for h in folder.glob("*_plugin.h")}
    creator = re.compile(rf"class\s+{name}Creator\b[^{{;]*TableCreator<\s*plugin_table::{name}\s*,")
    found = [h for h, text in headers.items() if creator.search(text)]
    expected = f"class {name}Creator ... TableCreator<plugin_table::{name}, ...>"
    assert len(found) == 1, f"{name}: expected one '{expected}' in plugins/{plugin['folder']}/*_plugin.h, got {found}"
    include = f'#include "{plugin["folder"]}/{found[0].name}"'
    assert include in REGISTER.read_text(), f"{name}: register.cpp lacks {include}"


def test_registration_is_generated_from_the_table():
    text = REGISTER.read_text()
    # Creators are instantiated and listed only through the X-macro over the table ...
    assert text.count("MASKRT_PLUGIN_TABLE_FOREACH(") >= 2
    assert "kNumPlugins" in text
    # ... and no plugin name is hard-coded in the registration.
    for plugin in load_table()["plugins"]:
        assert plugin["name"] not in text, f"register.cpp hard-codes {plugin['name']}: use the table's X-macro"
    exports = (ROOT / "plugins" / "tensorrt" / "exports.map").read_text()
    for entry in ("getCreators", "getPluginCreators", "setLoggerFinder"):
        assert re.search(rf"MASKRT_TRT_EXPORT\b[^;{{]*\b{entry}\(", text), f"register.cpp does not export {entry}"
        assert f"{entry};" in exports, f"exports.map does not export {entry}"


# ----------------------------------------------------------------------------------------------
# The generated header (CMake script mode + the host C++ compiler; no CUDA, no TensorRT).


def _tools() -> tuple[str, str]:
    cmake, cxx = shutil.which("cmake"), shutil.which("c++") or shutil.which("g++")
    if cmake is None or cxx is None:
        pytest.skip("cmake and a C++ compiler are needed to generate and compile the plugin table header")
    return cmake, cxx


def _generate(cmake: str, table_json: Path, header: Path) -> subprocess.CompletedProcess:
    driver = header.parent / "generate.cmake"
    driver.write_text(
        "cmake_minimum_required(VERSION 3.19)\n"
        f'include("{GENERATOR.as_posix()}")\n'
        'maskrt_generate_plugin_table("${JSON}" "${OUT}")\n'
    )
    args = [cmake, f"-DJSON={table_json}", f"-DOUT={header}", "-P", str(driver)]
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def test_generated_header_matches_table(tmp_path):
    cmake, cxx = _tools()
    table = load_table()
    header = tmp_path / "maskrt_plugin_table.h"
    proc = _generate(cmake, TABLE_PATH, header)
    assert proc.returncode == 0, proc.stdout
    # Attribute index enumerators, checked at compile time against the JSON order.
    asserts = "\n".join(
        f"static_assert({p['name']}::{a['name']} == {i}, \"{p['name']}.{a['name']}\");"
        for p in table["plugins"]
        for i, a in enumerate(p["attributes"])
    )
    program = tmp_path / "dump.cpp"
    program.write_text(
        '#include <cstdio>\n#include "maskrt_plugin_table.h"\n'
        "using namespace maskrt::plugin_table;\n" + asserts + "\n"
        "template <typename S> void dump() {\n"
        '  std::printf("P %s %s %s %d\\n", S::kName, S::kVersion, S::kFolder, static_cast<int>(S::kNumAttrs));\n'
        "  for (int i = 0; i < S::kNumAttrs; ++i) {\n"
        "    AttrSpec const& a = S::kAttrs[i];\n"
        '    std::printf("A %s %d %d", a.name, static_cast<int>(a.type), static_cast<int>(a.length));\n'
        "    for (int k = 0; k < a.length && a.str == nullptr; ++k) {\n"
        '      if (a.ints != nullptr) std::printf(" %d", static_cast<int>(a.ints[k]));\n'
        '      else std::printf(" %.9g", static_cast<double>(a.floats[k]));\n'
        "    }\n"
        '    if (a.str != nullptr) std::printf(" |%s|", a.str);\n'
        '    std::printf("\\n");\n'
        "  }\n"
        "}\n"
        "#define DUMP(Name) dump<Name>();\n"
        'int main() {\n  std::printf("N %s %s %d\\n", kNamespace, kOnnxDomain, static_cast<int>(kNumPlugins));\n'
        "  MASKRT_PLUGIN_TABLE_FOREACH(DUMP)\n  return 0;\n}\n"
    )
    exe = tmp_path / "dump"
    compile_args = [cxx, "-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror", f"-I{tmp_path}",
                    str(program), "-o", str(exe)]  # fmt: skip
    built = subprocess.run(compile_args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert built.returncode == 0, built.stdout
    lines = subprocess.run([str(exe)], stdout=subprocess.PIPE, text=True, timeout=30, check=True).stdout.splitlines()

    assert lines[0].split() == ["N", table["namespace"], table["onnx_domain"], str(len(table["plugins"]))]
    rest = iter(lines[1:])
    for p in table["plugins"]:
        assert next(rest).split() == ["P", p["name"], p["version"], p["folder"], str(len(p["attributes"]))]
        for a in p["attributes"]:
            fields = next(rest).split(" ", 4)
            d = a["default"]
            values = d if isinstance(d, list) else [d]
            assert fields[1:3] == [a["name"], str(ATTR_TYPE_CODES[a["type"]])], fields
            if a["type"] == "string":
                assert fields[3] == str(len(d.encode())) and fields[4] == f"|{d}|"
                continue
            assert int(fields[3]) == len(values), (a["name"], fields)
            got = fields[4].split() if len(fields) > 4 else []
            if a["type"] in ("int", "ints"):
                assert [int(g) for g in got] == values, (p["name"], a["name"])
            else:  # exactly the float32 nearest to the JSON number (%.9g round-trips a float32)
                assert [_f32(float(g)) for g in got] == [_f32(v) for v in values], (p["name"], a["name"])
    assert next(rest, None) is None


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_generator_rejects_malformed_table(tmp_path, mutation):
    cmake, _ = _tools()
    table = copy.deepcopy(load_table())
    mutate, words = MUTATIONS[mutation]
    mutate(table)
    bad = tmp_path / "plugin_table.json"
    bad.write_text(json.dumps(table))
    header = tmp_path / "maskrt_plugin_table.h"
    proc = _generate(cmake, bad, header)
    assert proc.returncode != 0, f"{mutation}: generator accepted the table"
    assert "plugin_table.json" in proc.stdout and words in proc.stdout, proc.stdout
    assert not header.exists()


def test_docs_plugins_md_is_the_rendered_table():
    """plugin_table.json says it is rendered in docs/plugins.md: the committed page is exactly the
    rendering of the committed table (regenerate: python -m maskrt.runtime.plugin_table > docs/plugins.md)."""
    from pathlib import Path

    from maskrt.runtime.plugin_table import load_plugin_table, markdown

    root = Path(__file__).resolve().parents[1]
    table = load_plugin_table(root / "plugins" / "plugin_table.json")
    assert "docs/plugins.md" in table["_doc"]
    page = (root / "docs" / "plugins.md").read_text(encoding="utf-8")
    assert page == markdown(table)
    for p in table["plugins"]:
        assert f"## {p['name']}" in page and all(f"`{a['name']}`" in page for a in p["attributes"])
