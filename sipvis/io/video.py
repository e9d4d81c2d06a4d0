"""Video files, network streams and cameras, decoded with PyAV (FFmpeg).

Anything FFmpeg can demux and decode works: mp4/mkv/avi/webm/mov with H.264,
HEVC, VP9, AV1, MJPEG, MS-MPEG4..., any chroma layout (4:2:0, 4:2:2, 4:4:4),
and rtsp/rtmp/http(s)/udp/srt URLs. Frames are converted to BGR, rotated by the
stream's display matrix, and keep their source timestamps (variable frame rate
stays correct). A packet the decoder rejects is skipped with a `MediaWarning`; frames a frame-threaded
decoder drops at the end of a truncated file are decoded again single-threaded, and frames the
stream declares but that could not be decoded (a truncated or damaged file) are counted in one more.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from sipvis.errors import SipvisError
from sipvis.io.background import media_warning
from sipvis.io.files import reason
from sipvis.io.source import RANGE_TOLERANCE, FrameRange, FrameSource, RawFrame

URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# schemes whose sources have no end and cannot seek; http(s) may be either, so the container decides
LIVE_SCHEMES = {"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "udp", "tcp", "srt"}
NETWORK_TIMEOUT_S = 10.0  # open and read timeout for URLs, so a dead stream fails instead of hanging
MAX_WARNINGS = 5  # corrupt-packet warnings shown one by one; the rest are counted in one last warning
MAX_CONSECUTIVE_READ_ERRORS = 8  # container read errors in a row before the rest of the input is given up


def is_url(spec: str) -> bool:
    """True if `spec` looks like `scheme://...` (other than file://)."""
    return bool(URL_RE.match(spec)) and not spec.lower().startswith("file://")


class _Problems:
    """Counts decode/read problems and warns about the first few, then once more with the total."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    def report(self, what: str, exc: Exception) -> None:
        self.count += 1
        if self.count <= MAX_WARNINGS:
            media_warning(f"{self.name}: {what} skipped ({reason(exc)})")

    def summary(self) -> None:
        if self.count > MAX_WARNINGS:
            media_warning(f"{self.name}: {self.count} damaged packets skipped in total")


def _side_data(frame: av.VideoFrame):
    """The frame's side-data entries. PyAV 18 and older iterate over the entries themselves, PyAV 19 (a
    proper Mapping) over their types."""
    container = frame.side_data
    for entry in container:
        yield entry if hasattr(entry, "type") else container[entry]


def _orientation(frame: av.VideoFrame) -> tuple[bool, bool, bool]:
    """(transpose, flip_rows, flip_cols) that bring a decoded frame to its display orientation.

    The display matrix maps a source pixel (x, y), y pointing down, to the display
    position (a*x + c*y, b*x + d*y) (FFmpeg's layout: a, b, c, d = m[0], m[1], m[3], m[4]).
    For multiples of 90 degrees, either b = c = 0 (no transpose; a < 0 mirrors columns,
    d < 0 mirrors rows) or a = d = 0 (transpose first; then b < 0 mirrors rows and
    c < 0 mirrors columns of the transposed image). Other angles are not supported.
    """
    for side in _side_data(frame):
        if side.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            m = np.frombuffer(bytes(side), dtype=np.int32)
            a, b, c, d = (int(np.sign(v)) for v in (m[0], m[1], m[3], m[4]))
            if b == 0 and c == 0:
                return False, d < 0, a < 0
            if a == 0 and d == 0:
                return True, b < 0, c < 0
            media_warning(f"rotation by {frame.rotation} degrees is not a multiple of 90; frames left unrotated")
    return False, False, False


def _rotation_degrees(orient: tuple[bool, bool, bool], frame: av.VideoFrame) -> int:
    return int(round(frame.rotation / 90.0)) * 90 % 360 if any(orient) else 0


class VideoSource(FrameSource):
    """A video file, URL or camera opened with PyAV. Use `open_source` rather than this class directly.

    Args:
        spec: path, URL, or (for a camera) an FFmpeg device string with `device_format`.
        frame_range: which frames to yield.
        threaded: decode in a background thread, `queue_size` frames ahead.
        device_format: FFmpeg input format for cameras (`v4l2`, `avfoundation`, `dshow`).
    """

    def __init__(
        self,
        spec: str,
        frame_range: FrameRange = FrameRange(),
        threaded: bool = True,
        queue_size: int = 4,
        device_format: str | None = None,
    ) -> None:
        super().__init__(frame_range, threaded, queue_size)
        self.spec = spec
        self._device_format = device_format
        url = is_url(spec)
        if url:
            self.name = _url_name(spec)
        elif device_format is not None:
            self.name = "camera" + re.sub(r"\D", "", spec)
        else:
            path = Path(spec.removeprefix("file://"))
            self.spec = str(path)
            self.name = path.stem
            if not path.exists():
                raise SipvisError(f"input not found: {path}")
            if path.is_dir():
                raise SipvisError(f"{path} is a folder, not a video")
            if path.stat().st_size == 0:
                raise SipvisError(f"{path} is an empty file")
        container, stream = self._open()
        try:
            frames = self._decoded(container, stream)
            first = next(frames, None)
            if first is None:
                raise SipvisError(f"no frame could be decoded from {self.spec}")
        except BaseException:
            container.close()
            raise
        self._orient = _orientation(first)
        self.rotation = _rotation_degrees(self._orient, first)
        self._coded_size = (first.width, first.height)
        self.width, self.height = (first.height, first.width) if self._orient[0] else (first.width, first.height)
        self.time_base = stream.time_base
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            media_warning(f"{self.name}: no frame rate in the stream; assuming 30 fps")
        self.fps = Fraction(rate) if rate else Fraction(30)
        self.frame_count = stream.frames or None
        if stream.duration is not None and stream.time_base is not None:
            self.duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            self.duration = container.duration / av.time_base
        self.has_audio = len(container.streams.audio) > 0
        scheme = spec.split("://", 1)[0].lower() if url else ""
        self.is_live = device_format is not None or scheme in LIVE_SCHEMES or bool(url and self.duration is None)
        self._start_time = stream.start_time or 0
        # keep the open container and its first frame for the first iteration: a live
        # stream cannot be opened twice without losing frames, and a file saves a re-open
        self._held: tuple[av.container.InputContainer, av.video.stream.VideoStream, Iterator, av.VideoFrame] | None
        self._held = (container, stream, frames, first)

    def _open(self) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
        options: dict[str, str] = {}
        timeout = None
        if is_url(self.spec):
            timeout = (NETWORK_TIMEOUT_S, NETWORK_TIMEOUT_S)
            if self.spec.lower().startswith("rtsp"):
                options["rtsp_transport"] = "tcp"  # UDP drops packets under load: broken frames
        try:
            container = av.open(self.spec, "r", format=self._device_format, options=options, timeout=timeout)
        except av.error.FileNotFoundError:
            raise SipvisError(f"input not found: {self.spec}") from None
        except av.error.PermissionError:
            raise SipvisError(f"cannot read {self.spec}: permission denied") from None
        except av.error.EOFError:
            raise SipvisError(f"no frame could be decoded from {self.spec}: the file ends before any frame") from None
        except av.error.InvalidDataError:
            raise SipvisError(f"not a video file sipvis can read: {self.spec}") from None
        except (av.error.FFmpegError, OSError) as exc:
            raise SipvisError(f"cannot open {self.spec}: {reason(exc)}") from None
        if not container.streams.video:
            container.close()
            raise SipvisError(f"{self.spec} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads inside FFmpeg (see `_recovered` for their one flaw)
        return container, stream

    def _decoded(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream, whole: bool = True
    ) -> Iterator[av.VideoFrame]:
        """Decoded frames in display order; damaged packets are skipped with a warning.

        `whole`: decoding starts at the beginning, so at the end the frames the stream declares but that
        were not delivered are counted in a warning (not after a seek, which skips frames on purpose).
        """
        problems = _Problems(self.name)
        failures = sent = delivered = 0
        drained = damaged = False
        last_pts = None
        while True:
            try:
                # `demux` ends with an empty packet, which flushes the decoder's delayed frames
                for packet in container.demux(stream):
                    failures = 0
                    drained = packet.size == 0
                    damaged = damaged or packet.is_corrupt
                    try:
                        frames = stream.decode(packet)
                    except av.error.EOFError:
                        break
                    except av.error.FFmpegError as exc:
                        damaged = True
                        problems.report(f"damaged packet at {_packet_time(packet)}", exc)
                        continue
                    sent += packet.size > 0
                    delivered += len(frames)
                    last_pts = frames[-1].pts if frames else last_pts
                    yield from frames
                break
            except (av.error.FFmpegError, OSError) as exc:
                # a read error ends `demux`; a new one continues after the bad bytes
                failures += 1
                damaged = True
                # timeouts and closed connections do not heal by reading again
                gone = isinstance(exc, (TimeoutError, ConnectionError, av.error.EOFError))
                if gone or failures >= MAX_CONSECUTIVE_READ_ERRORS:
                    media_warning(f"{self.name}: input ended early ({reason(exc)})")
                    break
                problems.report("unreadable data", exc)
        if not drained:  # `demux` stopped before its flushing packet: the decoder still holds frames
            for frame in _drain(stream):
                delivered += 1
                if frame.pts is not None:
                    last_pts = frame.pts  # recovery below resumes after the last frame delivered
                yield frame
        if damaged and delivered < sent and last_pts is not None and not self._live_input():
            for frame in self._recovered(last_pts):
                delivered += 1
                yield frame
        problems.summary()
        declared = stream.frames or 0
        if whole and declared > delivered:
            media_warning(f"{self.name}: {declared - delivered} of {declared} frames could not be decoded (damaged or truncated file)")

    def _live_input(self) -> bool:
        """A camera or a URL: no second reading of the same bytes."""
        return self._device_format is not None or is_url(self.spec)

    def _recovered(self, last_pts: int) -> Iterator[av.VideoFrame]:
        """The frames after `last_pts` that a frame-threaded decoder lost.

        Frame threading keeps several frames in flight in its worker threads; when a damaged packet
        ends the input (a truncated file), draining it stops at that packet's error and the frames in
        flight are dropped without a word. Decoding the tail again from the keyframe before them,
        single-threaded, gives every frame FFmpeg can decode (slice threading alone would avoid this,
        but is slower on every file whose frames are one slice each, i.e. most H.264).
        """
        container, stream = self._open()
        stream.thread_type = "NONE"
        try:
            container.seek(last_pts, stream=stream, backward=True, any_frame=False)
            for packet in container.demux(stream):
                try:
                    frames = stream.decode(packet)
                except av.error.FFmpegError:
                    continue  # already reported by the first pass
                yield from (f for f in frames if f.pts is not None and f.pts > last_pts)
        except (av.error.FFmpegError, OSError):
            return  # nothing more can be read back
        finally:
            container.close()

    def _seek(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream, start: float) -> bool:
        """Seek to the keyframe at or before `start` seconds; False if the input cannot seek."""
        if stream.time_base is None:
            return False
        try:
            target = int(start / stream.time_base) + self._start_time
            container.seek(target, stream=stream, backward=True, any_frame=False)
            stream.codec_context.flush_buffers()
            return True
        except (av.error.FFmpegError, OSError) as exc:
            media_warning(f"{self.name}: cannot seek ({reason(exc)}); decoding from the start")
            return False

    def _frames(self, start: float | None) -> Iterator[RawFrame]:
        held, self._held = self._held, None
        if held is None:
            container, stream = self._open()
            frames, first = self._decoded(container, stream), None
        else:
            container, stream, frames, first = held
        try:
            seeked = False
            if start and not self.is_live:
                frames.close()  # its demux position is about to move
                seeked = self._seek(container, stream, start)
                if not seeked and first is not None:  # the held container is past frame 0: start over
                    container.close()
                    container, stream = self._open()
                frames, first = self._decoded(container, stream, whole=not seeked), None
            if first is not None:
                frames = _chain(first, frames)
            tb = stream.time_base
            eps = RANGE_TOLERANCE / float(self.fps)
            for count, frame in enumerate(frames):
                pts = frame.pts
                timestamp = float((pts - self._start_time) * tb) if pts is not None and tb is not None else None
                # skip frames before `start` without converting them (the frame range drops them anyway)
                if start and timestamp is not None and timestamp < start - eps:
                    continue
                if seeked and timestamp is not None:
                    index = int(round(timestamp * float(self.fps)))  # exact for constant frame rate
                else:
                    index = count
                yield RawFrame(index, timestamp, pts, tb, lambda f=frame: self._to_image(f))
        finally:
            frames.close()
            container.close()

    def _to_image(self, frame: av.VideoFrame) -> np.ndarray:
        """(H, W, 3) uint8 BGR in display orientation; a frame of a new size is scaled to the first one's."""
        cw, ch = self._coded_size
        if (frame.width, frame.height) != (cw, ch):
            if not getattr(self, "_warned_resize", False):
                self._warned_resize = True
                media_warning(f"{self.name}: frame size changed to {frame.width}x{frame.height}; scaled to {cw}x{ch}")
            image = frame.reformat(width=cw, height=ch, format="bgr24").to_ndarray()
        else:
            image = frame.to_ndarray(format="bgr24")
        transpose, flip_rows, flip_cols = self._orient
        if transpose:
            image = image.transpose(1, 0, 2)
        if flip_rows:
            image = image[::-1]
        if flip_cols:
            image = image[:, ::-1]
        return np.ascontiguousarray(image)

    def close(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held[2].close()
            held[0].close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown; nothing useful to report
            pass


def _chain(first: av.VideoFrame, rest: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    try:
        yield first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()


def _drain(stream: av.video.stream.VideoStream) -> list[av.VideoFrame]:
    """The frames still inside the decoder, for an input whose demuxing ended with an error."""
    try:
        return stream.decode(None)
    except av.error.FFmpegError:
        return []  # nothing decodable is left


def _packet_time(packet: av.Packet) -> str:
    if packet.pts is not None and packet.time_base is not None:
        return f"{float(packet.pts * packet.time_base):.3f} s"
    return f"byte {packet.pos}" if packet.pos is not None and packet.pos >= 0 else "unknown position"


def _url_name(url: str) -> str:
    rest = url.split("://", 1)[1].split("?", 1)[0].rstrip("/")
    tail = rest.rsplit("/", 1)[-1] if "/" in rest else rest
    stem = Path(tail).stem or tail
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem) or "stream"


def camera_spec(index: int) -> tuple[str, str]:
    """(device, FFmpeg input format) of camera number `index` on this platform."""
    if sys.platform.startswith("linux"):
        return f"/dev/video{index}", "v4l2"
    if sys.platform == "darwin":
        return f"{index}:none", "avfoundation"
    raise SipvisError(f"camera {index}: opening cameras by number is supported on Linux and macOS only; pass a device URL")
