"""``TritonBackend``: the deployment graph served by NVIDIA Triton Inference Server (tritonclient, gRPC or HTTP).

    with Predictor.open("triton://127.0.0.1:8001/maskrt") as p:        # gRPC
        dets = p.predict(frame)
    Predictor.open("triton+http://127.0.0.1:8000/maskrt")              # HTTP; ".../maskrt/2": version 2

The URL names the server and the model: ``triton://HOST:PORT/MODEL[/VERSION]`` (gRPC, also
``triton+grpc://``) or ``triton+http://HOST:PORT/MODEL[/VERSION]``. The model is any repository
``maskrt serve`` wrote (a Python-backend model running ONNX Runtime, or a TensorRT plan).

:meth:`TritonBackend.open` connects, checks the server is live and the model ready, reads the
model's config through Triton's model-configuration API and takes the maskrt metadata it
publishes (``parameters``: ``maskrt.model_config``, ``maskrt.flavour``, ...) as the model's
:class:`ModelMetadata`; the config's inputs and outputs must be the deployment contract's (names,
dtypes, dims) and ``max_batch_size`` bounds the batch. The ModelConfig is therefore known only
once the backend is open.

:meth:`TritonBackend.infer` sends one request per batch with a request id of its own and checks
that the response carries the same id (a response can only be matched to the frames it was
computed for) and the contract's shapes; ``num_detections`` comes back ``[B, 1]`` (see
:mod:`maskrt.runtime.serving.repository`) and is returned as ``[B]``. It is thread-safe: each
thread uses its own client (connection).

A server that cannot be reached, is stopping or restarting raises :class:`ServerUnavailableError`.
With ``reconnect=True`` (the default) ``infer`` first waits for it as
:class:`~maskrt.runtime.video.sources.ReconnectingSource` waits for a camera: before attempt k
it waits ``min(backoff_initial_s * 2**(k-1), backoff_max_s)`` s, gives up after ``max_attempts``
attempts or when the next wait would pass ``max_reconnect_s`` since the loss, reports each step
(``on_event``, default: the ``maskrt.triton`` logger), reconnects, checks that the model is the
one it opened (same metadata and I/O, else :class:`~.base.BackendError`), and sends the same
batch again. So a video pipeline on this backend rides out a server restart: frames wait
(files) or are dropped at capture (live sources, counted in ``drops``), and none is lost in
flight; when it gives up, the error ends the pipeline with the stage ``infer``. :attr:`stats`
counts requests sent, answered and failed, frames sent and answered, reconnects.

Errors the server reports for a request (a bad input, an overloaded queue, the model's own
error) raise :class:`~.base.BackendError` with Triton's message; they are not retried.

Imports numpy at module level; tritonclient (``maskrt[serve]``) when the backend is constructed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from maskrt.runtime.config import ModelConfig

from .base import INPUT_NAME, OUTPUT_DTYPES, OUTPUT_NAMES, Backend, BackendError, ModelLoadError, ModelMetadata

__all__ = ["SCHEMES", "ServerUnavailableError", "TritonBackend", "TritonStats", "is_triton_url", "parse_triton_url"]

log = logging.getLogger("maskrt.triton")

SCHEMES = {"triton": "grpc", "triton+grpc": "grpc", "triton+http": "http"}
_CONFIG_DTYPES = {"uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "float32": "TYPE_FP32"}
# gRPC status codes / HTTP statuses that mean "not there now", as opposed to "refused this request".
_UNAVAILABLE_GRPC = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")
_UNAVAILABLE_HTTP = ("502", "503", "504")


class ServerUnavailableError(BackendError):
    """The Triton server cannot be reached, is stopping or restarting, or the model is not ready
    (after the reconnect attempts, when ``reconnect=True``)."""


def is_triton_url(artifact: Any) -> bool:
    return isinstance(artifact, str) and artifact.split("://", 1)[0].lower() in SCHEMES and "://" in artifact


def parse_triton_url(url: str) -> tuple[str, str, str, str]:
    """``triton[+grpc|+http]://HOST:PORT/MODEL[/VERSION]`` -> (protocol, "HOST:PORT", model, version);
    version "" is the server's choice. Raises ValueError saying what is wrong."""
    if not is_triton_url(url):
        raise ValueError(f"not a Triton URL: {url!r}; expected triton://HOST:PORT/MODEL (gRPC) or "
                         "triton+http://HOST:PORT/MODEL")
    parts = urlsplit(url)
    protocol = SCHEMES[parts.scheme.lower()]
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        example = "triton://127.0.0.1:8001/maskrt" if protocol == "grpc" else "triton+http://127.0.0.1:8000/maskrt"
        raise ValueError(f"{url}: name the host and port, e.g. {example}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{url}: a Triton URL has no user, query or fragment")
    path = [p for p in parts.path.split("/") if p]
    if not 1 <= len(path) <= 2:
        raise ValueError(f"{url}: the path must be /MODEL or /MODEL/VERSION, got {parts.path!r}")
    version = path[1] if len(path) == 2 else ""
    if version and not version.isdigit():
        raise ValueError(f"{url}: the model version must be a number, got {version!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return protocol, f"{host}:{port}", path[0], version


@dataclass
class TritonStats:
    """Request accounting of one backend (all threads): every request sent is answered or failed."""

    requests_sent: int = 0
    requests_answered: int = 0
    requests_failed: int = 0  # attempts that got no answer (server unavailable) or an error
    frames_sent: int = 0  # frames in the requests sent (a retried batch counts again)
    frames_answered: int = 0
    reconnects: int = 0  # successful reconnections after a loss
    reconnect_attempts: int = 0
    gave_up: int = 0  # batches given up after the reconnect attempts

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class TritonBackend(Backend):
    """The deployment graph on a Triton server (module docstring).

    Args:
        url: ``triton://HOST:PORT/MODEL[/VERSION]`` (gRPC) or ``triton+http://...``.
        timeout_s: client-side timeout of one request (and of each health / config call).
        reconnect: wait for a lost server with back-off and resend (True), or raise at once.
        max_attempts, max_reconnect_s, backoff_initial_s, backoff_max_s: the back-off
            (as :class:`~maskrt.runtime.video.sources.ReconnectingSource`'s).
        on_event: called with a one-line message at each loss, attempt and reconnection
            (default: a warning on the ``maskrt.triton`` logger).
    """

    name = "triton"

    def __init__(self, url: str, *, timeout_s: float = 30.0, reconnect: bool = True, max_attempts: int = 10,
                 max_reconnect_s: float = 60.0, backoff_initial_s: float = 0.5, backoff_max_s: float = 8.0,
                 on_event: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.url = str(url)
        self.protocol, self.address, self.model, self.version = parse_triton_url(self.url)
        for arg, v in (("timeout_s", timeout_s), ("max_reconnect_s", max_reconnect_s),
                       ("backoff_initial_s", backoff_initial_s), ("backoff_max_s", backoff_max_s)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{arg} must be a non-negative number of seconds, got {v!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be a positive int, got {max_attempts!r}")
        if backoff_max_s < backoff_initial_s:
            raise ValueError(f"backoff_max_s ({backoff_max_s}) must be >= backoff_initial_s ({backoff_initial_s})")
        if on_event is not None and not callable(on_event):
            raise ValueError(f"on_event must be a callable taking a message, got {on_event!r}")
        self.timeout_s = float(timeout_s)
        self.reconnect = bool(reconnect)
        self.max_attempts = max_attempts
        self.max_reconnect_s = float(max_reconnect_s)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self._on_event = on_event
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc as client_module
            else:
                import tritonclient.http as client_module
            from tritonclient.utils import InferenceServerException
        except ImportError as e:
            raise BackendError(f"{self.url}: the Triton client needs tritonclient[grpc,http]: pip install "
                               f"'maskrt[serve]' ({e})") from None
        self._tc = client_module
        self._server_error = InferenceServerException
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._interrupt = threading.Event()
        self._meta: ModelMetadata | None = None
        self._model_config: dict[str, Any] | None = None
        self._max_batch: int | None = None
        self._seq = 0
        self._stats = TritonStats()
        self.events: list[str] = []  # every on_event message, in order

    # ---------------------------------------------------------------- properties
    @property
    def config(self) -> ModelConfig:
        if self._meta is None:
            raise BackendError(f"{self!r}: the model's config comes from the server: open() the backend first")
        return self._meta.config

    @property
    def model_metadata(self) -> ModelMetadata:
        if self._meta is None:
            raise BackendError(f"{self!r}: not open")
        return self._meta

    @property
    def model_config(self) -> dict[str, Any]:
        """The model's Triton config (JSON form), as the server reported it at open."""
        if self._model_config is None:
            raise BackendError(f"{self!r}: not open")
        return dict(self._model_config)

    @property
    def max_batch(self) -> int | None:
        return self._max_batch

    @property
    def stats(self) -> TritonStats:
        """A copy of the request accounting."""
        with self._lock:
            return TritonStats(**asdict(self._stats))

    def interrupt(self) -> None:
        """Ends a reconnect wait now (the waiting ``infer`` raises :class:`ServerUnavailableError`)."""
        self._interrupt.set()

    # ---------------------------------------------------------------- events and errors
    def _report(self, message: str) -> None:
        self.events.append(message)
        if self._on_event is not None:
            self._on_event(message)
        else:
            log.warning("%s", message)

    def _unavailable(self, e: BaseException) -> bool:
        """True for "the server is not there now" (connection refused or reset, stopping, timeout)."""
        if isinstance(e, self._server_error):
            status = str(e.status() or "")
            text = str(e).lower()
            if self.protocol == "grpc":
                return status in _UNAVAILABLE_GRPC
            return (status in _UNAVAILABLE_HTTP or "connection" in text or "timed out" in text
                    or "server is stopping" in text)
        return isinstance(e, (OSError, EOFError)) or type(e).__module__.startswith(("gevent", "geventhttpclient"))

    # ---------------------------------------------------------------- clients
    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self._tc.InferenceServerClient(self.address)
            else:
                client = self._tc.InferenceServerClient(self.address, connection_timeout=self.timeout_s,
                                                        network_timeout=self.timeout_s)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _drop_client(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            try:
                client.close()
            except Exception as e:  # a broken connection may fail to close; it is dropped anyway
                log.debug("closing a Triton client: %s", e)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A client call; failures become ServerUnavailableError or BackendError (one line)."""
        if self.protocol == "grpc" and "client_timeout" not in kwargs and fn.__name__ != "infer":
            kwargs["client_timeout"] = self.timeout_s
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if self._unavailable(e):
                raise ServerUnavailableError(f"{self.url}: Triton server unavailable ({_first_line(e)})") from e
            raise BackendError(f"{self.url}: Triton refused the request: {_first_line(e)}") from e

    # ---------------------------------------------------------------- lifecycle
    def _fetch_model(self) -> tuple[ModelMetadata, dict[str, Any]]:
        """Health, readiness and the model's config from the server, validated."""
        client = self._client()
        if not self._call(client.is_server_live):
            raise ServerUnavailableError(f"{self.url}: the Triton server is not live")
        if not self._call(client.is_model_ready, self.model, self.version):
            raise ServerUnavailableError(f"{self.url}: model '{self.model}' is not ready on the server (not loaded, "
                                         "still loading, or another name: see the server's log)")
        if self.protocol == "grpc":
            cfg = self._call(client.get_model_config, self.model, self.version, as_json=True)["config"]
        else:
            cfg = self._call(client.get_model_config, self.model, self.version)
        params = {k: (v or {}).get("string_value", "") for k, v in (cfg.get("parameters") or {}).items()}
        meta = ModelMetadata.from_props(params, f"{self.url} (the model's config parameters)")
        _check_model_config(cfg, meta.config, self.url)
        return meta, cfg

    def _open(self) -> None:
        self._interrupt.clear()
        try:
            meta, cfg = self._fetch_model()
        except BaseException:
            self._close()
            raise
        self._meta, self._model_config = meta, cfg
        self._max_batch = int(cfg.get("max_batch_size", 0)) or None

    def _close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            try:
                c.close()
            except Exception as e:
                log.debug("closing a Triton client: %s", e)
        self._local = threading.local()

    # ---------------------------------------------------------------- inference
    def _request(self, images: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            self._seq += 1
            request_id = f"maskrt-{id(self):x}-{self._seq}"
            self._stats.requests_sent += 1
            self._stats.frames_sent += images.shape[0]
        tc = self._tc
        inp = tc.InferInput(INPUT_NAME, list(images.shape), "UINT8")
        if self.protocol == "grpc":
            inp.set_data_from_numpy(images)
        else:
            inp.set_data_from_numpy(images, binary_data=True)
        outs = ([tc.InferRequestedOutput(n) for n in OUTPUT_NAMES] if self.protocol == "grpc"
                else [tc.InferRequestedOutput(n, binary_data=True) for n in OUTPUT_NAMES])
        client = self._client()
        kwargs: dict[str, Any] = {"model_version": self.version, "outputs": outs, "request_id": request_id}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s  # the HTTP client's network_timeout bounds its requests
        try:
            result = self._call(client.infer, self.model, [inp], **kwargs)
        except BaseException:
            with self._lock:
                self._stats.requests_failed += 1
            raise
        got_id = result.get_response().id if self.protocol == "grpc" else result.get_response().get("id", "")
        # NOTE: the request id is ours and echoed by Triton; a response for other frames (a proxy
        # mixing up connections, a server bug) must not be attributed to this batch.
        if got_id != request_id:
            with self._lock:
                self._stats.requests_failed += 1
            raise BackendError(f"{self.url}: the response is for request {got_id!r}, not {request_id!r}")
        out = {n: result.as_numpy(n) for n in OUTPUT_NAMES}
        b = images.shape[0]
        nd = out["num_detections"]
        if nd is not None and nd.shape == (b, 1):
            out["num_detections"] = nd.reshape(b)
        with self._lock:
            self._stats.requests_answered += 1
            self._stats.frames_answered += b
        return out

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        while True:
            try:
                return self._request(images)
            except ServerUnavailableError as e:
                self._drop_client()
                if not self.reconnect:
                    raise
                # waits (bounded) until the server is back, then the same batch goes again;
                # raises ServerUnavailableError when the back-off gives up
                self._wait_for_server(str(e))

    def _wait_for_server(self, what: str) -> None:
        t_lost = time.monotonic()
        tried = 0
        for attempt in range(1, self.max_attempts + 1):
            delay = min(self.backoff_initial_s * 2.0 ** (attempt - 1), self.backoff_max_s)
            if time.monotonic() - t_lost + delay > self.max_reconnect_s:
                break
            self._report(f"{what}; reconnect attempt {attempt}/{self.max_attempts} in {delay:.3g} s")
            if self._interrupt.wait(delay):
                break
            tried += 1
            with self._lock:
                self._stats.reconnect_attempts += 1
            try:
                meta, cfg = self._fetch_model()
            except ServerUnavailableError as e:
                self._drop_client()
                why = _first_line(e).removeprefix(f"{self.url}: ")
                what = f"{self.url}: reconnect attempt {attempt} failed ({why})"
                continue
            if meta.raw != self._meta.raw or _io(cfg) != _io(self._model_config):
                raise BackendError(f"{self.url}: the server came back with a different model '{self.model}' "
                                   "(other metadata or I/O than at open): open the backend again")
            with self._lock:
                self._stats.reconnects += 1
            self._report(f"{self.url}: reconnected (attempt {attempt}, after {time.monotonic() - t_lost:.3g} s)")
            return
        with self._lock:
            self._stats.gave_up += 1
        msg = (f"{self.url}: Triton server lost; gave up after {tried} reconnect attempt{'' if tried == 1 else 's'} "
               f"over {time.monotonic() - t_lost:.3g} s")
        self._report(msg)
        raise ServerUnavailableError(msg)

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<TritonBackend {self.url} ({state})>"


# ------------------------------------------------------------------------------ config checks
def _io(cfg: Mapping[str, Any]) -> tuple:
    def norm(ts):
        return tuple((t.get("name"), t.get("data_type"), tuple(int(d) for d in t.get("dims", ()))) for t in ts or ())

    return norm(cfg.get("input")), norm(cfg.get("output")), int(cfg.get("max_batch_size", 0))


def _check_model_config(cfg: Mapping[str, Any], mc: ModelConfig, source: str) -> None:
    """The Triton config's I/O against the contract (per item, the batch axis being Triton's).
    Raises ModelLoadError naming the tensor."""

    def bad(why: str) -> ModelLoadError:
        return ModelLoadError(f"{source}: {why}")

    if int(cfg.get("max_batch_size", 0)) < 1:
        raise bad("max_batch_size is 0: maskrt models are served with Triton's batch axis (max_batch_size >= 1)")
    h, w = (int(v) for v in mc.input_size)
    k, m = int(mc.detections_per_img), int(mc.mask_resolution)
    want_in = {INPUT_NAME: ("TYPE_UINT8", (h, w, 3))}
    want_out = {"num_detections": (1,), "boxes": (k, 4), "scores": (k,), "classes": (k,), "masks": (k, m, m)}
    inputs = {t.get("name"): t for t in cfg.get("input") or ()}
    outputs = {t.get("name"): t for t in cfg.get("output") or ()}
    if set(inputs) != set(want_in):
        raise bad(f"inputs are {sorted(inputs)}; the contract has exactly '{INPUT_NAME}' uint8 [B, {h}, {w}, 3]")
    missing = [n for n in OUTPUT_NAMES if n not in outputs]
    if missing:
        raise bad(f"outputs {sorted(outputs)} lack {missing}")
    checks = [(INPUT_NAME, inputs[INPUT_NAME], *want_in[INPUT_NAME])]
    checks += [(n, outputs[n], _CONFIG_DTYPES[OUTPUT_DTYPES[n].name], want_out[n]) for n in OUTPUT_NAMES]
    for name, t, dtype, dims in checks:
        if t.get("data_type") != dtype:
            raise bad(f"'{name}' is {t.get('data_type')}; the contract's is {dtype}")
        got = tuple(int(d) for d in t.get("dims", ()))
        if got != dims:
            raise bad(f"'{name}' has dims {list(got)} per item; the ModelConfig gives {list(dims)}")

