"""Serving maskrt models on NVIDIA Triton Inference Server.

* :mod:`.repository` writes a Triton model repository for a maskrt artefact: a ``tensorrt_plan``
  model (a ``maskrt build`` engine, our plugin library, ``config.pbtxt`` from the contract) for a
  GPU server, or a Python-backend model that runs ``OrtBackend`` (ONNX Runtime) for any server;
* :mod:`.server` starts the ``tritonserver`` that ``nvidia-pytriton`` bundles (or another one) on
  127.0.0.1, waits until it is ready and stops it (SIGTERM, then SIGKILL), removing its workspace;
* :mod:`.cli` is ``maskrt serve``.

The client is :class:`maskrt.runtime.backends.triton.TritonBackend` (``triton://host:port/model``).
Nothing here is imported by ``maskrt`` at start-up; each module imports only the standard library
at module level (tritonclient's protobuf classes are imported where a config is written).
"""
