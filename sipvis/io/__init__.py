"""Reading frames, writing videos, drawing results and writing per-frame result files.

No torch here: everything works on numpy arrays and `sipvis.results.FrameInstances`.

Reading::

    from sipvis.io import open_source, expand_inputs

    for spec in expand_inputs(["clips/", "frames/*.jpg", "rtsp://cam/stream"]):  # one entry per video
        with open_source(spec, vid_stride=1, start=None, end=None, max_frames=None) as source:
            source.width, source.height, source.fps, source.frame_count, source.duration
            source.rotation, source.has_audio, source.name, source.time_base, source.is_live
            source.expected_frames               # frames this iteration will yield (for progress bars)
            for frame in source:                 # decoded in a background thread, 4 frames ahead
                frame.index, frame.image, frame.timestamp, frame.pts, frame.time_base

`frame.image` is (H, W, 3) uint8 BGR in display orientation (rotation metadata applied).
`open_source` raises `SipvisError` (one line) for a missing input, an unreadable or
non-video file, an empty folder or a file with no decodable frame. A damaged packet
in the middle of a stream is skipped with a `MediaWarning`.

Writing::

    from sipvis.io import VideoWriter, Renderer, InstancePngSink, MotsTxtSink

    renderer = Renderer(class_names, alpha=0.5, trails=False)
    with VideoWriter("out.mp4", source.width, source.height, source.fps, source.time_base,
                     audio_from=source.spec if source.has_audio and not source.is_live else None) as video, \\
         InstancePngSink("out_png/") as pngs, MotsTxtSink("out.txt") as mots:
        for frame, inst in ...:                  # inst: FrameInstances of `frame`
            video.write(renderer.draw(frame.image, inst), frame.pts)
            pngs.write(frame, inst)
            mots.write(frame, inst)

Every output of a run is a sink (`sinks.Sink`: `write(frame, instances)`, `close()`): the annotated
video, YouTube-VIS JSON, PNGs, MOTS text, a window, and the live recording and snapshots.
Every writer leaves a valid file when the `with` block ends by an exception or Ctrl-C.
File formats are described in `formats` and `video_writer`, and in docs/inputs-outputs.md.
"""

from sipvis.io.background import MediaWarning
from sipvis.io.colors import track_color, track_colors
from sipvis.io.formats import InstancePngSink, MotsTxtSink, id_map, mots_lines
from sipvis.io.inputs import expand_inputs, open_source
from sipvis.io.render import Renderer, label_text, owner_map
from sipvis.io.source import Frame, FrameSource
from sipvis.io.video_writer import VideoWriter

__all__ = [
    "Frame",
    "FrameSource",
    "InstancePngSink",
    "MotsTxtSink",
    "MediaWarning",
    "Renderer",
    "VideoWriter",
    "expand_inputs",
    "id_map",
    "label_text",
    "mots_lines",
    "open_source",
    "owner_map",
    "track_color",
    "track_colors",
]
