"""``triton://`` URLs: parsing, routing in ``Predictor``/``open_backend``, and the errors for bad ones
(no server needed)."""

from __future__ import annotations

import pytest

from maskrt.runtime.backends.triton import parse_triton_url
from maskrt.runtime.predictor import open_backend


@pytest.mark.parametrize(("url", "want"), [
    ("triton://127.0.0.1:8001/maskrt", ("grpc", "127.0.0.1:8001", "maskrt", "")),
    ("triton+grpc://gpu-box:9001/seg/3", ("grpc", "gpu-box:9001", "seg", "3")),
    ("triton+http://[::1]:8000/maskrt/", ("http", "[::1]:8000", "maskrt", "")),
    ("TRITON://h:1/m", ("grpc", "h:1", "m", "")),
])
def test_parse(url, want):
    assert parse_triton_url(url) == want


@pytest.mark.parametrize(("url", "match"), [
    ("triton://127.0.0.1/maskrt", "host and port"),
    ("triton://127.0.0.1:8001", "/MODEL"),
    ("triton://127.0.0.1:8001/a/b/c", "/MODEL"),
    ("triton://127.0.0.1:8001/maskrt/latest", "version must be a number"),
    ("triton://127.0.0.1:8001/maskrt?x=1", "no user, query"),
    ("triton://u:p@127.0.0.1:8001/maskrt", "no user, query"),
    ("http://127.0.0.1:8000/maskrt", "not a Triton URL"),
])
def test_parse_refuses(url, match):
    with pytest.raises(ValueError, match=match):
        parse_triton_url(url)


def test_open_backend_routes_urls():
    pytest.importorskip("tritonclient.grpc")
    backend = open_backend("triton://127.0.0.1:1/maskrt", timeout_s=1.0)
    assert type(backend).__name__ == "TritonBackend" and not backend.is_open
    with pytest.raises(ValueError, match="unknown URL scheme"):
        open_backend("grpc://127.0.0.1:8001/maskrt")
    with pytest.raises(ValueError, match="max_attempts"):
        open_backend("triton://127.0.0.1:1/maskrt", max_attempts=0)
