"""``maskrt serve``: write a Triton model repository for a maskrt artefact and, with ``--start``, serve it.

    maskrt serve model.onnx --out-dir repo                 # Python backend + ONNX Runtime (any server)
    maskrt serve model.engine --out-dir repo               # tensorrt_plan + plugin library (GPU server)
    maskrt serve model.onnx --start                        # a temporary repository, the bundled tritonserver
    maskrt serve --repository repo --start --grpc-port 9001

With ``--start`` the server binds 127.0.0.1 (``--host`` to change), prints the URLs clients use
(``triton://HOST:PORT/NAME``), and runs until Ctrl-C or SIGTERM; then it is stopped with SIGTERM
and its workspace (and a temporary repository) removed.

Module level: standard library only (the command table imports this module to build the parser).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
from pathlib import Path


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None,
                   help="an 'ort' ONNX model (.onnx: Python-backend model running ONNX Runtime) or a `maskrt build` "
                        "engine (.engine/.plan: tensorrt_plan model)")
    p.add_argument("--out-dir", default=None, metavar="DIR",
                   help="the model repository to write (default with --start: a temporary one, removed at the end)")
    p.add_argument("--repository", default=None, metavar="DIR", help="serve this existing repository (with --start)")
    p.add_argument("--name", default="maskrt", help="model name in the repository (default maskrt)")
    p.add_argument("--force", action="store_true", help="replace a model of that name already in --out-dir")
    g = p.add_argument_group("model configuration")
    g.add_argument("--max-batch", type=int, default=None, metavar="N",
                   help="largest batch Triton forms (default 8; an engine: its profile's maximum)")
    g.add_argument("--preferred-batch", type=int, nargs="+", default=None, metavar="N",
                   help="batch sizes the dynamic batcher aims for (default: Triton's, up to --max-batch)")
    g.add_argument("--queue-delay-us", type=int, default=2000, metavar="US",
                   help="how long the dynamic batcher waits for more requests (default 2000 us)")
    g.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    g.add_argument("--threads", type=int, default=2,
                   help="ONNX Runtime intra-op threads per instance (Python backend; default 2)")
    g.add_argument("--plugins", default=None, metavar="PATH",
                   help="the engine's plugin library (default: found as `maskrt infer` finds it)")
    g.add_argument("--gpus", default=None, metavar="I[,I]", help="GPUs of the instance group (tensorrt_plan)")
    s = p.add_argument_group("server (--start)")
    s.add_argument("--start", action="store_true", help="start tritonserver on the repository and serve until "
                                                        "Ctrl-C / SIGTERM")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--http-port", type=int, default=8000, help="HTTP port (default 8000; 0: a free one)")
    s.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001; 0: a free one)")
    s.add_argument("--metrics-port", type=int, default=None, help="Prometheus metrics port (default: metrics off)")
    s.add_argument("--tritonserver", default=None, metavar="PATH",
                   help="the tritonserver binary (default: $MASKRT_TRITONSERVER, nvidia-pytriton's, then PATH)")


class _Terminated(Exception):
    """SIGTERM arrived (raised in the main thread by the handler)."""


def _kind(model: str) -> str:
    suffix = Path(model).suffix.lower()
    if suffix == ".onnx":
        return "python"
    if suffix in (".engine", ".plan", ".trt"):
        return "tensorrt_plan"
    raise ValueError(f"{model}: expected an .onnx model or a .engine/.plan engine, got {suffix or 'no suffix'!r}")


def _write(args: argparse.Namespace, out_dir: Path) -> tuple[Path, str]:
    from maskrt.runtime.serving.repository import write_python_model, write_tensorrt_model

    kind = _kind(args.model)
    if kind == "python":
        if args.plugins or args.gpus:
            raise ValueError("--plugins and --gpus apply to engines (tensorrt_plan), not to an ONNX model")
        model_dir = write_python_model(args.model, out_dir, name=args.name, max_batch=args.max_batch or 8,
                                       preferred=args.preferred_batch, queue_delay_us=args.queue_delay_us,
                                       instances=args.instances, threads=args.threads, overwrite=args.force)
    else:
        gpus = [int(g) for g in args.gpus.split(",") if g.strip()] if args.gpus else None
        model_dir = write_tensorrt_model(args.model, out_dir, name=args.name, plugin_library=args.plugins,
                                         max_batch=args.max_batch, preferred=args.preferred_batch,
                                         queue_delay_us=args.queue_delay_us, instances=args.instances, gpus=gpus,
                                         overwrite=args.force)
    return model_dir, kind


def _platforms(repository: Path) -> set[str]:
    found = set()
    for cfg in repository.glob("*/config.pbtxt"):
        text = cfg.read_text(encoding="utf-8", errors="replace")
        found.add("tensorrt_plan" if 'platform: "tensorrt_plan"' in text else "other")
    return found


def run_serve(args: argparse.Namespace) -> int:
    if args.model is None and args.repository is None:
        raise ValueError("name a model to write a repository for, or --repository DIR --start to serve one")
    if args.model is not None and args.repository is not None:
        raise ValueError("give a model (with --out-dir) or --repository, not both")
    if args.repository is not None and not args.start:
        raise ValueError("--repository serves an existing repository: add --start")
    if args.model is not None and args.out_dir is None and not args.start:
        raise ValueError("--out-dir DIR is where the repository is written (or --start to serve a temporary one)")
    temp: Path | None = None
    try:
        if args.model is not None:
            if args.out_dir is None:
                temp = Path(tempfile.mkdtemp(prefix="maskrt-repo-"))
            repo = Path(args.out_dir) if args.out_dir is not None else temp
            model_dir, kind = _write(args, repo)
            print(f"wrote {model_dir} ({'Python backend, ONNX Runtime' if kind == 'python' else 'tensorrt_plan'}); "
                  f"how to serve it: {repo / 'README.md'}")
        else:
            repo = Path(args.repository)
        if not args.start:
            return 0
        return _serve(args, repo)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _serve(args: argparse.Namespace, repo: Path) -> int:
    from maskrt.runtime.serving.server import ServerError, TritonServer, find_tritonserver

    install = find_tritonserver(args.tritonserver)
    if install.bundled and "tensorrt_plan" in _platforms(repo):
        raise ServerError(f"{repo} holds a tensorrt_plan model, but the tritonserver bundled with nvidia-pytriton "
                          "has only the Python backend: run NVIDIA's tritonserver container on a GPU machine "
                          f"({repo / 'README.md'})")
    server = TritonServer(repo, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, tritonserver=install)

    def on_term(signum, frame):  # noqa: ARG001
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        server.start()
        names = sorted(p.parent.name for p in repo.glob("*/config.pbtxt"))
        print(f"tritonserver (pid {server.pid}) serving {', '.join(names)} on {args.host}:")
        for n in names:
            print(f"  triton://{server.grpc_url}/{n}   triton+http://{server.http_url}/{n}")
        print("Ctrl-C or SIGTERM stops it.", flush=True)
        code = server.wait()
        raise ServerError(f"tritonserver exited on its own (code {code}); its log ends:\n{server.log_tail()}")
    except (KeyboardInterrupt, _Terminated) as e:
        code = server.stop()
        print(f"stopped tritonserver ({'SIGTERM' if isinstance(e, _Terminated) else 'Ctrl-C'}; exit code {code})")
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
