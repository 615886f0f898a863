"""maskrt.benchmarks: ``maskrt bench`` and the benchmark scripts (the ``benchmarks/`` folder).

``maskrt bench``, split by concern:

    options.py    stage names, :class:`BenchOptions` (validated), :class:`BenchError`
    machine.py    CPU / GPU / library versions, load average, peak RSS, the fp32 GEMM probe
    flops.py      the FLOP model (ONNX shape inference; PyTorch forward hooks without a graph)
    profilers.py  ONNX Runtime profile attribution, timers inside a PyTorch forward (CUDA events on a GPU)
    artefacts.py  the model named by ``--model`` (exported to ONNX when it is a checkpoint) and the frames
    measure.py    the measuring loop per backend and batch size, post-processing and pipeline FPS, trtexec
    report.py     the JSON schema check, the markdown summary, the PNG plots
    run.py        one run: all of the above into ``bench.json``, ``bench.md`` and the plots
    cli.py        ``maskrt bench`` arguments and command

Scripts (``python -m maskrt.benchmarks.<name>``): ``bench_nms``, ``bench_roi_align`` (the plugins'
CPU twins vs ONNX Runtime), ``bench_postprocess`` (native vs numpy/OpenCV pre/post-processing),
``soak`` (a long video-pipeline run), ``precision_bench`` (fp32 / fp16 / int8 graphs),
``tracker_cost``, ``bench_tracking`` (MOT metrics, streams), ``bench_serving`` (Triton),
``anchor_coverage``, ``timing`` (their timing loop) and ``reproduce``: the one command that
regenerates every committed result in ``benchmarks/results/`` (docs/results.md).

This package may import ``maskrt.train`` and ``maskrt.export`` (a checkpoint is exported before it
is measured); ``maskrt.runtime`` imports nothing from here. Importing the package or
:mod:`~maskrt.benchmarks.cli` imports neither torch nor onnx.
"""
