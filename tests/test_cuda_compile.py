"""CI compile checks of the native GPU code (nothing here needs or uses a GPU).

* The CUDA kernels (static target ``maskrt_cuda``) must compile with nvcc for every deployment
  architecture (sm_75 Turing, sm_80/86 Ampere, sm_87 Jetson Orin, sm_89 Ada, sm_90 Hopper)
  without a single warning, and the static library must hold SASS for each of them.
* Where TensorRT headers are found (env ``TensorRT_ROOT``), the TensorRT plugin library
  ``maskrt_trt_plugins`` must compile and link (without libnvinfer) and export exactly the
  plugin-library entry points.

One CMake configure and build directory serve both (-j2; ``build/cuda-check``, kept between runs:
see CUDA_CHECK_DIR). Skips only where nvcc is absent (respectively where the TensorRT headers are).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCHS = (75, 80, 86, 87, 89, 90)
ENTRY_POINTS = {"getCreators", "getPluginCreators", "setLoggerFinder"}

pytestmark = pytest.mark.slow

# NOTE: "warning" anywhere in the build log fails the check, including host-compiler warnings
# that -Werror would already stop and nvcc driver warnings (e.g. deprecated architectures) that
# it would not.
_WARNING = re.compile(r"\bwarning\b", re.IGNORECASE)


def _find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in (os.environ.get("CUDACXX"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


# ----------------------------------------------------------------------------------------------
# Fat binary inspection (the format cuobjdump reads; cuobjdump is not installed everywhere).
# A static library is an ar archive of ELF objects; the device code of each object is in its
# .nv_fatbin section: containers (magic 0xBA55ED50, u16 version, u16 header size, u64 payload
# size), each a run of entries (u16 kind: 1 = PTX, 2 = ELF/SASS; u32 entry header size at +4;
# u64 payload size at +8; u32 SM version at +28).


def ar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Yield (member name, bytes) of a GNU/BSD ar archive (long names resolved)."""
    if data[:8] != b"!<arch>\n":
        raise ValueError("not an ar archive")
    offset, long_names = 8, b""
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name = header[:16].decode().strip()
        size = int(header[48:58].decode().strip())
        body = data[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size & 1)
        if name == "//":
            long_names = body
            continue
        if name in ("/", "/SYM64/"):
            continue  # symbol index
        if name.startswith("/") and name[1:].isdigit():
            start = int(name[1:])
            name = long_names[start : long_names.index(b"\n", start)].decode()
        yield name.rstrip("/"), body


def elf_section(obj: bytes, wanted: str) -> bytes | None:
    """The bytes of section `wanted` of a 64-bit little-endian ELF object, or None."""
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF object")
    (shoff,) = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", obj, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", obj, shoff + i * shentsize) for i in range(shnum)]
    names_offset = headers[shstrndx][4]
    for name_offset, _type, _flags, _addr, offset, size in headers:
        start = names_offset + name_offset
        if obj[start : obj.index(b"\0", start)].decode() == wanted:
            return obj[offset : offset + size]
    return None


def fatbin_entries(section: bytes) -> list[tuple[str, int]]:
    """[(kind 'ptx'|'sass'|'other', sm)] of every entry of every container in a .nv_fatbin section."""
    entries, offset = [], 0
    while offset + 16 <= len(section):
        magic, _version, header_size, payload_size = struct.unpack_from("<IHHQ", section, offset)
        if magic != 0xBA55ED50:
            break
        entry, end = offset + header_size, offset + header_size + payload_size
        while entry < end:
            kind, _ver, entry_header_size, entry_size = struct.unpack_from("<HHIQ", section, entry)
            (sm,) = struct.unpack_from("<I", section, entry + 28)
            entries.append(({1: "ptx", 2: "sass"}.get(kind, "other"), sm))
            entry += entry_header_size + entry_size
        offset = (end + 7) & ~7  # containers are 8-byte aligned
    return entries


def sass_by_object(library: Path) -> dict[str, set[int]]:
    """{object name: SM versions with SASS} for every object of a static library with device code."""
    result = {}
    for name, obj in ar_members(library.read_bytes()):
        if not obj.startswith(b"\x7fELF"):
            continue
        section = elf_section(obj, ".nv_fatbin")
        if section is not None:
            result[name] = {sm for kind, sm in fatbin_entries(section) if kind == "sass"}
    return result


# ----------------------------------------------------------------------------------------------


# NOTE: the build folder persists between runs (build/ is not in git; a fresh clone, as in CI,
# builds everything), so an edit-test loop recompiles only what changed: CMake rebuilds every
# object whose source, headers or flags changed, and an unchanged object compiled warning-free
# before. A build that fails or prints a warning removes the folder, so the next run cannot pass
# on objects it did not recompile. MASKRT_CUDA_CHECK_DIR overrides the folder.
CUDA_CHECK_DIR = Path(os.environ.get("MASKRT_CUDA_CHECK_DIR", ROOT / "build" / "cuda-check"))


@pytest.fixture(scope="module")
def cuda_build() -> Path:
    """One configure with MASKRT_CUDA=ON (and TensorRT_ROOT from the environment, if any)."""
    nvcc = _find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (not on PATH, $CUDACXX or /usr/local/cuda/bin): no CUDA compile check here")
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("cmake not found on PATH (needed for the native build)")
    build = CUDA_CHECK_DIR
    build.mkdir(parents=True, exist_ok=True)
    args = [
        cmake, "-S", str(ROOT), "-B", str(build),
        "-DCMAKE_BUILD_TYPE=Release",
        "-DMASKRT_CUDA=ON",
        "-DMASKRT_PYTHON=OFF",
        f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(map(str, ARCHS))}",
        f"-DCMAKE_CUDA_COMPILER={nvcc}",
        # The TensorRT the TRT test below checks (CMake would read the same environment variable).
        f"-DTensorRT_ROOT={os.environ.get('TensorRT_ROOT', '')}",
    ]  # fmt: skip
    proc = _run(args, timeout=300)
    if proc.returncode != 0 and (build / "CMakeCache.txt").is_file():
        shutil.rmtree(build, ignore_errors=True)  # a kept folder from another compiler or CMake: start afresh
        build.mkdir(parents=True)
        proc = _run(args, timeout=300)
    if proc.returncode != 0:
        shutil.rmtree(build, ignore_errors=True)
        pytest.fail(f"CMake configure with MASKRT_CUDA=ON failed:\n{proc.stdout}")
    return build


def _build_target(build: Path, target: str) -> str:
    """Builds `target` with -j2; fails the test with the full log on an error or any warning."""
    proc = _run(["cmake", "--build", str(build), "--target", target, "-j", "2"], timeout=1200)
    if proc.returncode != 0:
        shutil.rmtree(build, ignore_errors=True)  # the next run builds from scratch
        pytest.fail(f"building {target} failed:\n{proc.stdout}")
    warnings = [line for line in proc.stdout.splitlines() if _WARNING.search(line)]
    if warnings:
        shutil.rmtree(build, ignore_errors=True)  # else the next run would not recompile what warned
        pytest.fail(f"building {target} printed warnings:\n" + "\n".join(warnings) + f"\n\nfull log:\n{proc.stdout}")
    return proc.stdout


@pytest.fixture(scope="module")
def cuda_library(cuda_build: Path) -> Path:
    _build_target(cuda_build, "maskrt_cuda")
    library = cuda_build / "plugins" / "libmaskrt_cuda.a"
    assert library.is_file(), f"{library} missing after the build"
    return library


def test_cuda_kernels_compile_without_warnings(cuda_library: Path):
    # The fixture builds (-Werror all-warnings, host -Wall -Wextra -Werror) and fails on any warning.
    assert cuda_library.stat().st_size > 0


def test_every_cu_file_has_sass_for_every_architecture(cuda_library: Path):
    sass = sass_by_object(cuda_library)
    cu_files = sorted(p.relative_to(ROOT / "plugins") for p in (ROOT / "plugins").rglob("*.cu"))
    assert cu_files, "no .cu sources under plugins/"
    for cu in cu_files:
        objects = [name for name in sass if name == f"{cu.name}.o"]
        assert objects, f"{cu}: no object with device code in libmaskrt_cuda.a (objects: {sorted(sass)})"
        for name in objects:
            assert sass[name] == set(ARCHS), f"{name}: SASS for sm {sorted(sass[name])}, expected {list(ARCHS)}"


def test_fatbin_reader_matches_nvcc_flags(tmp_path: Path):
    """The reader above, on an object whose device code nvcc was told exactly: SASS sm_75 only,
    PTX + SASS for sm_86 (independent of the project's build)."""
    nvcc = _find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    source = tmp_path / "probe.cu"
    source.write_text("__global__ void probe(float* x) { x[threadIdx.x] = 1.0f; }\n")
    obj = tmp_path / "probe.o"
    args = [nvcc, "-c", str(source), "-o", str(obj),
            "--generate-code=arch=compute_75,code=sm_75",
            "--generate-code=arch=compute_86,code=[compute_86,sm_86]"]  # fmt: skip
    proc = _run(args, timeout=300)
    assert proc.returncode == 0, proc.stdout
    section = elf_section(obj.read_bytes(), ".nv_fatbin")
    assert section is not None
    assert sorted(fatbin_entries(section)) == [("ptx", 86), ("sass", 75), ("sass", 86)]


def test_sass_listing_agrees_with_cuobjdump(cuda_library: Path):
    """Where cuobjdump exists, the fat-binary reader above must agree with NVIDIA's own tool."""
    cuobjdump = shutil.which("cuobjdump") or (
        "/usr/local/cuda/bin/cuobjdump" if Path("/usr/local/cuda/bin/cuobjdump").is_file() else None
    )
    if cuobjdump is None:
        pytest.skip("cuobjdump not installed (test_fatbin_reader_matches_nvcc_flags checks the reader instead)")
    proc = _run([cuobjdump, "--list-elf", str(cuda_library)], timeout=120)
    assert proc.returncode == 0, proc.stdout
    listed = {int(m) for m in re.findall(r"\.sm_(\d+)[a-z]?\.cubin", proc.stdout)}
    ours = set().union(*sass_by_object(cuda_library).values())
    assert listed == ours == set(ARCHS), proc.stdout


@pytest.mark.trt
def test_trt_plugin_library_builds_and_exports_entry_points(cuda_build: Path, cuda_library: Path):
    trt_root = os.environ.get("TensorRT_ROOT", "")
    if not trt_root or not (Path(trt_root) / "include" / "NvInfer.h").is_file():
        pytest.skip("TensorRT headers not found: set TensorRT_ROOT to a TensorRT >= 10 root holding include/NvInfer.h")
    _build_target(cuda_build, "maskrt_trt_plugins")
    library = cuda_build / "plugins" / "tensorrt" / "libmaskrt_trt_plugins.so"
    assert library.is_file(), f"{library} missing after the build"
    nm = shutil.which("nm")
    readelf = shutil.which("readelf")
    if nm is None or readelf is None:
        pytest.skip("binutils (nm, readelf) not installed: cannot inspect the plugin library's symbols")
    exported = _run([nm, "-D", "--defined-only", str(library)], timeout=60).stdout
    names = {line.split()[-1] for line in exported.splitlines() if line.strip()}
    assert names == ENTRY_POINTS, f"exported symbols {sorted(names)}, expected {sorted(ENTRY_POINTS)}"
    needed = _run([readelf, "-d", str(library)], timeout=60).stdout
    assert "libnvinfer" not in needed, f"the plugin library must not need libnvinfer at link time:\n{needed}"
