# maskrt_generate_plugin_table(<json> <header>)
#
# Reads the one plugin table (plugins/plugin_table.json) at configure time and writes a C++
# header with, per plugin, its name, version and attribute specs (name, type, default). The
# TensorRT creators take their field names and defaults from it and register.cpp instantiates one
# creator per entry, so the compiled registration cannot drift from the table the exporter and
# the docs read. A malformed table stops the configure with a message naming the entry.
#
# Attribute types and their PluginField encoding (the encoding TensorRT's ONNX parser produces
# from ONNX attributes): int -> kINT32 x1, ints -> kINT32 xN, float -> kFLOAT32 x1,
# floats -> kFLOAT32 xN, string -> kCHAR xbytes.
#
# Also usable in script mode (tests/test_plugin_table.py generates and compiles the header
# without CUDA or TensorRT):
#   cmake -DJSON=<json> -DOUT=<header> -P <driver that does cmake_minimum_required(VERSION 3.19),
#         include(plugin_table.cmake) and maskrt_generate_plugin_table(${JSON} ${OUT})>
#
# NOTE: string(JSON GET) re-prints numbers from a double (0.7 -> 0.69999999999999996); as a float
# literal that is the same float as 0.7f.

function(_maskrt_table_fail msg)
  message(FATAL_ERROR "plugins/plugin_table.json: ${msg}")
endfunction()

# C++ literal of one JSON number for a C++ type (int32_t or float); fails on a type mismatch.
function(_maskrt_number_literal out text ctype where)
  if(ctype STREQUAL "int32_t")
    if(NOT text MATCHES "^-?[0-9]+$")
      _maskrt_table_fail("${where}: default ${text} is not an integer")
    endif()
    set(${out} "${text}" PARENT_SCOPE)
  else()
    if(NOT text MATCHES "^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$")
      _maskrt_table_fail("${where}: default ${text} is not a number")
    endif()
    # NOTE: an integral JSON number (224) needs a decimal point to be a float literal.
    if(NOT text MATCHES "[.eE]")
      set(text "${text}.0")
    endif()
    set(${out} "${text}f" PARENT_SCOPE)
  endif()
endfunction()

function(maskrt_generate_plugin_table json_path header_path)
  file(READ "${json_path}" _json)
  # Editing the table re-runs the configure (and so regenerates the header).
  if(NOT CMAKE_SCRIPT_MODE_FILE)
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${json_path}")
  endif()

  string(JSON _namespace ERROR_VARIABLE _err GET "${_json}" namespace)
  if(_err)
    _maskrt_table_fail("no \"namespace\" (${_err})")
  endif()
  string(JSON _domain ERROR_VARIABLE _err GET "${_json}" onnx_domain)
  if(_err)
    _maskrt_table_fail("no \"onnx_domain\" (${_err})")
  endif()
  string(JSON _nplugins ERROR_VARIABLE _err LENGTH "${_json}" plugins)
  if(_err OR _nplugins EQUAL 0)
    _maskrt_table_fail("\"plugins\" must be a non-empty array")
  endif()

  set(_body "")
  set(_foreach "")
  set(_names "")
  math(EXPR _last_plugin "${_nplugins} - 1")
  foreach(_p RANGE ${_last_plugin})
    string(JSON _name GET "${_json}" plugins ${_p} name)
    string(JSON _version GET "${_json}" plugins ${_p} version)
    string(JSON _folder GET "${_json}" plugins ${_p} folder)
    string(JSON _vtype TYPE "${_json}" plugins ${_p} version)
    if(NOT _name MATCHES "^[A-Za-z_][A-Za-z0-9_]*$")
      _maskrt_table_fail("plugin ${_p}: name \"${_name}\" must be a C identifier (it is the ONNX op_type)")
    endif()
    if(NOT _vtype STREQUAL "STRING" OR NOT _version MATCHES "^[0-9]+$")
      _maskrt_table_fail("${_name}: version must be a string of digits, e.g. \"1\"")
    endif()
    if(_name IN_LIST _names)
      _maskrt_table_fail("plugin name ${_name} appears twice")
    endif()
    list(APPEND _names "${_name}")
    string(APPEND _foreach " X(${_name})")

    string(JSON _nattrs LENGTH "${_json}" plugins ${_p} attributes)
    set(_defaults "")
    set(_specs "")
    set(_enum "")
    set(_attr_names "")
    if(_nattrs GREATER 0)
      math(EXPR _last_attr "${_nattrs} - 1")
      foreach(_a RANGE ${_last_attr})
        string(JSON _an GET "${_json}" plugins ${_p} attributes ${_a} name)
        string(JSON _at GET "${_json}" plugins ${_p} attributes ${_a} type)
        string(JSON _dtype ERROR_VARIABLE _err TYPE "${_json}" plugins ${_p} attributes ${_a} default)
        set(_where "${_name}.${_an}")
        if(_err)
          _maskrt_table_fail("${_where}: no default")
        endif()
        if(NOT _an MATCHES "^[a-z_][a-z0-9_]*$")
          _maskrt_table_fail("${_where}: attribute names are lower_snake_case identifiers")
        endif()
        if(_an IN_LIST _attr_names OR _an STREQUAL "plugin_version" OR _an STREQUAL "plugin_namespace")
          _maskrt_table_fail("${_where}: duplicate or reserved attribute name")
        endif()
        list(APPEND _attr_names "${_an}")
        string(APPEND _enum "    ${_an} = ${_a},\n")
        set(_ints "nullptr")
        set(_floats "nullptr")
        set(_str "nullptr")
        set(_len 1)
        set(_dname "k${_name}_${_an}_default")
        if(_at STREQUAL "int" OR _at STREQUAL "float")
          if(NOT _dtype STREQUAL "NUMBER")
            _maskrt_table_fail("${_where}: type ${_at} needs a number default")
          endif()
          string(JSON _dv GET "${_json}" plugins ${_p} attributes ${_a} default)
          if(_at STREQUAL "int")
            set(_ctype int32_t)
            set(_ints "${_dname}")
          else()
            set(_ctype float)
            set(_floats "${_dname}")
          endif()
          _maskrt_number_literal(_lit "${_dv}" ${_ctype} "${_where}")
          string(APPEND _defaults "inline constexpr ${_ctype} ${_dname}[] = {${_lit}};\n")
        elseif(_at STREQUAL "ints" OR _at STREQUAL "floats")
          if(NOT _dtype STREQUAL "ARRAY")
            _maskrt_table_fail("${_where}: type ${_at} needs an array default")
          endif()
          if(_at STREQUAL "ints")
            set(_ctype int32_t)
          else()
            set(_ctype float)
          endif()
          string(JSON _len LENGTH "${_json}" plugins ${_p} attributes ${_a} default)
          if(_len GREATER 0)
            set(_lits "")
            math(EXPR _last_el "${_len} - 1")
            foreach(_e RANGE ${_last_el})
              string(JSON _et TYPE "${_json}" plugins ${_p} attributes ${_a} default ${_e})
              if(NOT _et STREQUAL "NUMBER")
                _maskrt_table_fail("${_where}: element ${_e} of the default is not a number")
              endif()
              string(JSON _ev GET "${_json}" plugins ${_p} attributes ${_a} default ${_e})
              _maskrt_number_literal(_lit "${_ev}" ${_ctype} "${_where}")
              list(APPEND _lits "${_lit}")
            endforeach()
            list(JOIN _lits ", " _lits)
            string(APPEND _defaults "inline constexpr ${_ctype} ${_dname}[] = {${_lits}};\n")
            if(_at STREQUAL "ints")
              set(_ints "${_dname}")
            else()
              set(_floats "${_dname}")
            endif()
          endif()
          # NOTE: an empty default (e.g. level_sizes) has no array (C++ has no zero-length arrays):
          # pointer nullptr, length 0; the plugin decides whether empty is acceptable.
        elseif(_at STREQUAL "string")
          if(NOT _dtype STREQUAL "STRING")
            _maskrt_table_fail("${_where}: type string needs a string default")
          endif()
          string(JSON _dv GET "${_json}" plugins ${_p} attributes ${_a} default)
          string(REPLACE "\\" "\\\\" _dv "${_dv}")
          string(REPLACE "\"" "\\\"" _dv "${_dv}")
          set(_str "\"${_dv}\"")
          string(LENGTH "${_dv}" _len)
        else()
          _maskrt_table_fail("${_where}: type \"${_at}\" is not one of int, ints, float, floats, string")
        endif()
        string(TOUPPER "${_at}" _AT)
        string(APPEND _specs "      {\"${_an}\", AttrType::k${_AT}, ${_ints}, ${_floats}, ${_str}, ${_len}},\n")
      endforeach()
    endif()

    string(APPEND _body "
// ---- ${_name} v${_version} (folder plugins/${_folder}) ----
${_defaults}
struct ${_name} {
  static constexpr char const* kName = \"${_name}\";
  static constexpr char const* kVersion = \"${_version}\";
  static constexpr char const* kFolder = \"${_folder}\";
  static constexpr int32_t kNumAttrs = ${_nattrs};
  // Attribute indices, in table order.
  enum Attr : int32_t {
${_enum}  };
  static constexpr AttrSpec kAttrs[] = {
${_specs}  };
};
")
  endforeach()

  set(_content "// GENERATED at configure time from plugins/plugin_table.json by plugins/tensorrt/plugin_table.cmake.
// Do not edit: change the table (and bump the plugin's version if its semantics change).
#pragma once

#include <cstdint>

namespace maskrt {
namespace plugin_table {

// TensorRT plugin namespace of every creator (ONNX attribute plugin_namespace).
inline constexpr char kNamespace[] = \"${_namespace}\";
// ONNX domain of the plugin nodes the exporter writes.
inline constexpr char kOnnxDomain[] = \"${_domain}\";
inline constexpr int32_t kNumPlugins = ${_nplugins};

enum class AttrType : int32_t { kINT, kINTS, kFLOAT, kFLOATS, kSTRING };

// One attribute: exactly one of ints/floats/str holds the default (by type); length counts its
// elements (1 for scalars, bytes for strings, may be 0 for arrays).
struct AttrSpec {
  char const* name;
  AttrType type;
  int32_t const* ints;
  float const* floats;
  char const* str;
  int32_t length;
};
${_body}
}  // namespace plugin_table
}  // namespace maskrt

// X-macro over the table, in table order: MASKRT_PLUGIN_TABLE_FOREACH(X) expands X(<name>) per plugin.
#define MASKRT_PLUGIN_TABLE_FOREACH(X)${_foreach}
")
  # file(CONFIGURE) would do; WRITE only when changed keeps the dependents from rebuilding.
  if(EXISTS "${header_path}")
    file(READ "${header_path}" _old)
  else()
    set(_old "")
  endif()
  if(NOT _old STREQUAL _content)
    file(WRITE "${header_path}" "${_content}")
  endif()
endfunction()
