"""Real-time video: sources, the threaded pipeline, sinks.

    from maskrt.runtime.predictor import Predictor
    from maskrt.runtime.video import JsonlSink, VideoFileSink, VideoPipeline, open_source

    with Predictor.open("model.onnx") as predictor:
        stats = VideoPipeline(open_source("0"), predictor, [VideoFileSink("out.mp4"), JsonlSink("out.jsonl")],
                              tracker=Tracker()).run()              # maskrt.runtime.tracking.Tracker

    Many streams through one batched inference stage: :class:`MultiStreamPipeline`.

Imports numpy and OpenCV only (no torch, no onnx).
"""

from .multistream import MultiStreamPipeline, MultiStreamStats, StreamStats
from .overlay import class_colour, draw_detections, track_colour
from .pipeline import STAGES, PipelineError, PipelineStats, StageStats, VideoPipeline
from .sinks import (
    FrameResult,
    ImageFolderSink,
    JsonlSink,
    PerImageSink,
    Sink,
    StreamInfo,
    VideoFileSink,
    WindowSink,
    frame_record,
)
from .sources import (
    CameraSource,
    CaptureSource,
    Frame,
    GStreamerSource,
    ImageFolderSource,
    ReconnectingSource,
    Source,
    SourceError,
    SourceOpenError,
    StreamSource,
    VideoFileSource,
    open_source,
)

__all__ = [
    "STAGES",
    "CameraSource",
    "CaptureSource",
    "Frame",
    "FrameResult",
    "GStreamerSource",
    "ImageFolderSink",
    "ImageFolderSource",
    "JsonlSink",
    "MultiStreamPipeline",
    "MultiStreamStats",
    "PerImageSink",
    "PipelineError",
    "PipelineStats",
    "ReconnectingSource",
    "Sink",
    "Source",
    "SourceError",
    "SourceOpenError",
    "StageStats",
    "StreamInfo",
    "StreamSource",
    "StreamStats",
    "VideoFileSink",
    "VideoFileSource",
    "VideoPipeline",
    "WindowSink",
    "class_colour",
    "draw_detections",
    "frame_record",
    "open_source",
    "track_colour",
]
