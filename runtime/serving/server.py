"""Start, watch and stop a ``tritonserver`` process (the one ``nvidia-pytriton`` bundles, or another).

    with TritonServer("repo", http_port=0, grpc_port=0) as server:   # 0: a free port, chosen at start
        print(server.grpc_url)                                       # "127.0.0.1:40123"

:func:`find_tritonserver` locates the server: an explicit path or ``$MASKRT_TRITONSERVER`` (a
``tritonserver`` binary in Triton's standard layout, ``<root>/bin/tritonserver`` with
``<root>/backends``), else the copy inside the ``nvidia-pytriton`` wheel (Triton 2.51, Python
backend only), else ``tritonserver`` on ``PATH``.

:class:`TritonServer` runs it in a workspace (a temporary folder: the backends folder the bundled
server needs, and the server log) and

* binds HTTP and gRPC to ``host`` (127.0.0.1 by default) on the given ports, metrics off unless a
  port is given; a port of 0 is a free port chosen at start (re-chosen, up to 3 tries, when the
  server exits because another process took it first);
* waits until ``/v2/health/ready`` answers 200 (strict readiness: every model loaded), or raises
  :class:`ServerError` with the end of the server log when it exits or does not get ready in time;
* stops it with SIGTERM (Triton finishes in-flight requests), then SIGKILL after a timeout, and
  removes the workspace. NOTE: SIGINT is not used: a tritonserver started in the background (no
  controlling terminal in its process group) ignores it.

The bundled server's snags, handled here:

* its Python-backend stub links ``libpython3.X.so``: ``LD_LIBRARY_PATH`` starts with the running
  interpreter's ``LIBDIR`` (sysconfig), so the stub embeds the same Python as this process (else,
  with the system's libpython, loading a model fails with ``'_thread.RLock' object has no attribute
  '_recursion_count'``), and names the wheel's ``nvidia_pytriton.libs``;
* the wheel holds one stub per Python version; the workspace's ``backends/python`` gets the one for
  this interpreter, next to ``libtriton_python.so``, as Triton expects.

Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ENV_TRITONSERVER", "ServerError", "TritonInstall", "TritonServer", "find_tritonserver", "free_port"]

ENV_TRITONSERVER = "MASKRT_TRITONSERVER"
INSTALL_HINT = ("install the server bundled with nvidia-pytriton (`pip install --no-deps nvidia-pytriton==0.7.0`, as "
                "`make install` does), run inside NVIDIA's tritonserver container, or pass --tritonserver PATH / set "
                f"${ENV_TRITONSERVER}")


class ServerError(RuntimeError):
    """The server cannot be found, does not start, exits, or does not get ready in time."""


@dataclass(frozen=True)
class TritonInstall:
    """Where a tritonserver lives: the binary, its backends folder, the Python-backend stub for
    this interpreter (bundled layout only; a standard install keeps it in the backends folder) and
    the folders its libraries need on ``LD_LIBRARY_PATH``."""

    binary: Path
    backends: Path
    stub: Path | None = None
    libs: tuple[Path, ...] = field(default_factory=tuple)
    bundled: bool = False


def _bundled() -> TritonInstall | None:
    spec = importlib.util.find_spec("pytriton")  # the package's location; nothing of it is imported
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not binary.is_file():
        return None
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    libs = root.parent.parent / "nvidia_pytriton.libs"
    return TritonInstall(binary, root / "backends", stub if stub.is_file() else None,
                         (libs,) if libs.is_dir() else (), bundled=True)


def _standard(binary: Path) -> TritonInstall:
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise ServerError(f"{binary}: not an executable tritonserver")
    root = binary.resolve().parent.parent
    return TritonInstall(binary, root / "backends", None, (root / "lib",) if (root / "lib").is_dir() else ())


def find_tritonserver(explicit: str | os.PathLike | None = None) -> TritonInstall:
    """The server to run (module docstring for the order). Raises :class:`ServerError` saying
    where it looked and how to install one."""
    if explicit is not None:
        return _standard(Path(explicit))
    env = os.environ.get(ENV_TRITONSERVER)
    if env:
        return _standard(Path(env))
    found = _bundled()
    if found is not None:
        return found
    on_path = shutil.which("tritonserver")
    if on_path:
        return _standard(Path(on_path))
    raise ServerError(f"no tritonserver found (no --tritonserver, no ${ENV_TRITONSERVER}, no nvidia-pytriton, none on "
                      f"PATH): {INSTALL_HINT}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _parent_death_signal() -> None:  # runs in the child between fork and exec
    # NOTE: PR_SET_PDEATHSIG (1): the server gets SIGTERM when the *thread* that started it ends
    # (Linux's rule), so a crashed or SIGKILLed maskrt leaves no server behind. A server started
    # from a short-lived thread needs die_with_parent=False. Linux only; ignored elsewhere.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _check_port(name: str, port: int | None, allow_none: bool = False) -> int | None:
    if port is None and allow_none:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{name} must be a TCP port 0..65535 (0: a free one), got {port!r}")
    return port


class TritonServer:
    """A tritonserver process over one model repository (module docstring).

    Args:
        repository: the model repository folder (``maskrt serve --out-dir``).
        host: address HTTP and gRPC bind to (default 127.0.0.1: this machine only).
        http_port, grpc_port: ports (0: a free port chosen at start).
        metrics_port: Prometheus metrics port (None: metrics off; 0: a free port).
        tritonserver: the binary (default :func:`find_tritonserver`).
        startup_timeout_s: how long :meth:`start` waits for readiness.
        log_verbose: Triton's ``--log-verbose`` level.
        extra_args: more tritonserver arguments (a list, never a shell string).
        env: extra environment variables for the server.
        die_with_parent: the server gets SIGTERM when the thread that started it ends (Linux
            ``PR_SET_PDEATHSIG``): nothing is left behind by a killed maskrt. Pass False to start
            (or :meth:`restart`) it from a thread that ends before the server should.
    """

    def __init__(self, repository: str | os.PathLike, *, host: str = "127.0.0.1", http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int | None = None,
                 tritonserver: str | os.PathLike | TritonInstall | None = None, startup_timeout_s: float = 120.0,
                 log_verbose: int = 0, extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 die_with_parent: bool = True) -> None:
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            raise ValueError(f"{repository}: model repository folder not found (write one with `maskrt serve`)")
        self.host = str(host)
        self._ports = {"http": _check_port("http_port", http_port), "grpc": _check_port("grpc_port", grpc_port),
                       "metrics": _check_port("metrics_port", metrics_port, allow_none=True)}
        self.install = tritonserver if isinstance(tritonserver, TritonInstall) else find_tritonserver(tritonserver)
        if not startup_timeout_s > 0:
            raise ValueError(f"startup_timeout_s must be positive, got {startup_timeout_s!r}")
        self.startup_timeout_s = float(startup_timeout_s)
        self.log_verbose = int(log_verbose)
        if isinstance(extra_args, str):
            raise ValueError("extra_args must be a list of arguments, not one string")
        self.extra_args = [str(a) for a in extra_args]
        self.env = dict(env or {})
        self.die_with_parent = bool(die_with_parent)
        self.http_port = self.grpc_port = 0
        self.metrics_port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._workspace: Path | None = None
        self.last_log = ""  # the server log, kept when the workspace is removed

    # ---------------------------------------------------------------- addresses
    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def workspace(self) -> Path | None:
        return self._workspace

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ---------------------------------------------------------------- lifecycle
    def _prepare_workspace(self) -> Path:
        ws = Path(tempfile.mkdtemp(prefix="maskrt-triton-"))
        backends = self.install.backends
        if self.install.bundled:
            # The bundled layout keeps one stub per Python version apart from the backend; Triton
            # looks for it next to libtriton_python.so.
            dst = ws / "backends"
            shutil.copytree(backends, dst, ignore=shutil.ignore_patterns("__pycache__"))
            if self.install.stub is not None:
                shutil.copy2(self.install.stub, dst / "python" / "triton_python_backend_stub")
            backends = dst
        (ws / "backends.txt").write_text(str(backends))
        return ws

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        libdir = sysconfig.get_config_var("LIBDIR")
        parts = ([libdir] if libdir else []) + [str(p) for p in self.install.libs]
        if env.get("LD_LIBRARY_PATH"):
            parts.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(parts)
        return env

    def _command(self, backends: Path) -> list[str]:
        cmd = [str(self.install.binary), f"--model-repository={self.repository}",
               f"--backend-directory={backends}", f"--http-address={self.host}", f"--grpc-address={self.host}",
               f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}", "--model-control-mode=none",
               "--exit-on-error=true", "--strict-readiness=true", f"--log-verbose={self.log_verbose}"]
        if self.metrics_port is None:
            cmd.append("--allow-metrics=false")
        else:
            cmd += [f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}"]
        return cmd + self.extra_args

    def start(self) -> TritonServer:
        """Starts the server and waits until it is ready (every model loaded). Raises
        :class:`ServerError` (with the end of the server log) when it exits first or is not ready
        within ``startup_timeout_s``; the process is stopped and the workspace removed then."""
        if self._proc is not None:
            raise ServerError(f"tritonserver is already running (pid {self._proc.pid})")
        auto = any(v == 0 for v in self._ports.values())
        for attempt in range(1, 4 if auto else 2):
            self.http_port, self.grpc_port = (self._ports[k] or free_port(self.host) for k in ("http", "grpc"))
            m = self._ports["metrics"]
            self.metrics_port = None if m is None else (m or free_port(self.host))
            try:
                self._launch()
                return self
            except ServerError as e:
                in_use = "address already in use" in self.last_log.lower() or "failed to start" in self.last_log.lower()
                if not (auto and in_use and attempt < 3):
                    raise
                del e  # another process took a chosen port between our check and the server's bind: choose again
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        self._workspace = ws = self._prepare_workspace()
        backends = Path((ws / "backends.txt").read_text())
        log = open(ws / "server.log", "wb")  # noqa: SIM115 (the child writes it; closed below)
        try:
            self._proc = subprocess.Popen(self._command(backends), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=self._environment(), cwd=ws,
                                          start_new_session=True,
                                          preexec_fn=_parent_death_signal if self.die_with_parent else None)
        except OSError as e:
            log.close()
            self._cleanup()
            raise ServerError(f"{self.install.binary}: cannot run tritonserver ({e})") from e
        finally:
            log.close()
        try:
            self.wait_ready(self.startup_timeout_s)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout_s: float) -> None:
        """Polls ``/v2/health/ready`` until it answers 200. Raises :class:`ServerError` when the
        process exits or ``timeout_s`` passes."""
        url = f"http://{self.http_url}/v2/health/ready"
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                self.last_log = self.read_log()
                raise ServerError(f"tritonserver exited (code {code}) before it was ready; its log ends:\n"
                                  f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as r:  # noqa: S310 (http on our own host)
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                self.last_log = self.read_log()
                raise ServerError(f"tritonserver was not ready within {timeout_s:g} s; its log ends:\n"
                                  f"{self.log_tail()}")
            time.sleep(0.1)

    def read_log(self) -> str:
        """The server's log so far (empty when there is no workspace)."""
        if self._workspace is None or not (self._workspace / "server.log").is_file():
            return self.last_log
        return (self._workspace / "server.log").read_bytes().decode("utf-8", "replace")

    def log_tail(self, lines: int = 15) -> str:
        text = self.read_log() or self.last_log
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Waits for the process to exit (``None``: forever); its exit code, or None on timeout."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL, as a crash would (the workspace stays until :meth:`stop`): the server and the
        backend processes it started (its process group)."""
        if self.is_running():
            self._kill_group()
            self._proc.wait(10)

    def _kill_group(self) -> None:
        """SIGKILL to the server's process group (it leads its own session, ``start_new_session``).
        NOTE: the Python backend's stubs are the server's children in its group and are not
        reparented or stopped when the server dies by SIGKILL: killing only the server leaves them
        running for ever (seen here), so the group is killed, and after any stop what is left of it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s`` (Triton finishes in-flight requests), then SIGKILL;
        removes the workspace (the log is kept in :attr:`last_log`). Returns the exit code.
        Stopping a stopped server only cleans up."""
        code = None
        if self._proc is not None:
            if self._proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self._kill_group()
                    self._proc.wait(10)
            code = self._proc.returncode
            self._kill_group()  # stubs left by a server that was killed or exited without them
        self._cleanup()
        return code

    def _cleanup(self) -> None:
        if self._workspace is not None:
            self.last_log = self.read_log()
            shutil.rmtree(self._workspace, ignore_errors=True)
        self._workspace = None
        self._proc = None

    def restart(self) -> TritonServer:
        """Starts again on the same ports (after :meth:`kill` or :meth:`stop`)."""
        if self.is_running():
            raise ServerError("tritonserver is still running; stop or kill it first")
        if self._proc is not None:
            self._kill_group()
        self._cleanup()
        ports = self._ports
        self._ports = {"http": self.http_port, "grpc": self.grpc_port, "metrics": self.metrics_port}
        try:
            # NOTE: the old sockets may linger in TIME_WAIT; Triton's servers set SO_REUSEADDR,
            # but a bind can still fail for a moment after a kill: retry for a few seconds.
            deadline = time.monotonic() + 10.0
            while True:
                try:
                    return self.start()
                except ServerError:
                    if time.monotonic() > deadline or "address" not in self.last_log.lower():
                        raise
                    time.sleep(0.5)
        finally:
            self._ports = ports

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self._proc.pid}" if self.is_running() else "stopped"
        return f"<TritonServer {self.repository.name} http={self.http_url} grpc={self.grpc_url} ({state})>"

