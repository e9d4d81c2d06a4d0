"""Write annotated frames to a video file, keeping the source's size, timing and audio.

Video is H.264 (libx264, yuv420p, `+faststart` in mp4/mov) when PyAV's FFmpeg has
an H.264 encoder, else MPEG-4 Part 2 with one `MediaWarning`; AVI files always get
MPEG-4 Part 2 (H.264 in AVI plays one frame late in FFmpeg-based players). Per-frame `pts` keep
the source timestamps (variable frame rate stays variable); the first frame starts
at 0. The audio of `audio_from` over the same time span is copied packet by packet
when the output container can hold its codec, else transcoded to AAC.

The file is written under a temporary name beside the output, unique to the run
(`.NAME.XXXXXXXX.partial.EXT`, see `files.temp_file_beside`), and renamed when `close()` finishes, so the output path only ever holds a complete
file; `close()` runs on leaving a `with` block, also on an exception or Ctrl-C, and
then keeps every frame written so far; `abort()` drops the file instead.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from sipvis.errors import SipvisError
from sipvis.io.background import BackgroundWorker, media_warning
from sipvis.io.files import ensure_folder, publish, reason, temp_file_beside

# output extension -> (FFmpeg muxer, audio codecs it takes as they are)
CONTAINERS: dict[str, tuple[str, set[str] | None]] = {
    ".mp4": ("mp4", {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}),
    ".m4v": ("mp4", {"aac", "mp3", "ac3", "eac3", "alac"}),
    ".mov": ("mov", {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"}),
    ".mkv": ("matroska", None),  # None: Matroska takes any audio codec
    ".avi": ("avi", {"mp3", "ac3", "pcm_s16le", "pcm_u8", "aac"}),
}
H264_ENCODERS = ("libx264", "h264", "libopenh264")  # tried in order; "h264" is FFmpeg's default H.264 encoder
FALLBACK_ENCODER = "mpeg4"


class VideoWriter:
    """Encode BGR frames into a video file; use it as a context manager.

    Args:
        path: output file; `.mp4`, `.mov`, `.m4v`, `.mkv` or `.avi`. Missing parent folders are created.
        width, height: frame size; odd sizes are padded by one pixel (yuv420p needs even sizes).
        fps: nominal frame rate (Fraction or float), written to the stream header.
        time_base: unit of the `pts` given to `write` (e.g. `source.time_base`); None means 1 / fps,
            so `pts` is a frame number.
        audio_from: a media file whose audio is added over the span of the written frames
            (same clock as `pts`, i.e. pass the source's `Frame.pts`). None: no audio.
        crf, preset: libx264 quality (lower crf = better, 18-23 is visually near lossless)
            and speed/size trade-off.
        threaded: encode in a background thread, at most `queue_size` frames behind `write`.

    `write` keeps a reference to the image until it is encoded: do not modify it afterwards.

    Raises:
        SipvisError: unsupported extension, unwritable location, disk full, unreadable `audio_from`.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float | Fraction,
        time_base: Fraction | None = None,
        audio_from: str | Path | None = None,
        *,
        crf: int = 20,
        preset: str = "veryfast",
        threaded: bool = True,
        queue_size: int = 8,
    ) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in CONTAINERS:
            raise SipvisError(f"cannot write video {self.path.name}: use one of {', '.join(CONTAINERS)}")
        if width < 1 or height < 1 or not fps or fps <= 0:
            raise ValueError(f"bad video size/rate {width}x{height} @ {fps}")
        self.width, self.height = int(width), int(height)
        self.fps = Fraction(fps).limit_denominator(1001 * 1000) if not isinstance(fps, Fraction) else fps
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        self.frames_written = 0
        self._format, self._copyable = CONTAINERS[suffix]
        self._closed = False
        self._first_pts: int | None = None
        self._last_pts: int | None = None  # encoder pts (from 0) of the last frame, in units of `_tb`
        self._last_duration = 0
        self._warned_order = False
        ensure_folder(self.path.parent)
        options = {"movflags": "+faststart"} if self._format in ("mp4", "mov") else {}
        try:
            fd, self._tmp = temp_file_beside(self.path, keep_suffix=True)
        except OSError as exc:
            raise SipvisError(f"cannot write {self.path}: {reason(exc)}") from None
        os.close(fd)  # FFmpeg opens the file by name
        try:
            self._container = av.open(str(self._tmp), "w", format=self._format, options=options)
        except (av.error.FFmpegError, OSError) as exc:
            _discard(self._tmp)
            raise SipvisError(f"cannot write {self.path}: {reason(exc)}") from None
        try:
            self._video = self._add_video_stream(crf, preset)
            self._audio = _AudioCopy(self._container, audio_from, self._copyable) if audio_from else None
        except BaseException:
            self._container.close()
            _discard(self._tmp)
            raise
        self._worker = BackgroundWorker(self._encode, queue_size, f"sipvis-writer:{self.path.name}") if threaded else None

    # -- setup -------------------------------------------------------------------------------

    def _add_video_stream(self, crf: int, preset: str) -> av.video.stream.VideoStream:
        # yuv420p halves the chroma resolution, so both sides must be even
        self._coded = (self.width + self.width % 2, self.height + self.height % 2)
        if self._coded != (self.width, self.height):
            media_warning(f"{self.path.name}: {self.width}x{self.height} padded to {self._coded[0]}x{self._coded[1]} (yuv420p needs even sizes)")
        options = {"crf": str(crf), "preset": preset}
        if self._format == "avi":
            # AVI stores no presentation times and H.264 in AVI carries no reordering hint, so FFmpeg-based
            # players show it one frame late; MPEG-4 Part 2 (the DivX/Xvid codec) is what AVI is made for
            name, options = FALLBACK_ENCODER, {}
        else:
            for name in H264_ENCODERS:
                if _encoder_opens(name, self._coded, self.time_base, options if name == "libx264" else {}):
                    break
            else:
                name = FALLBACK_ENCODER
                media_warning(f"{self.path.name}: no H.264 encoder in this FFmpeg build; writing MPEG-4 Part 2 video instead")
                options = {}
        # the encoder counts in the caller's time base, except where that cannot be stored: AVI keeps
        # one rate, not timestamps, and MPEG-4 Part 2 limits the time base to 16 bits; there it counts
        # frames (pts rounded to the nearest frame)
        self._tb = self.time_base
        if self._format == "avi" or (name == FALLBACK_ENCODER and self.time_base.denominator > 65535):
            self._tb = 1 / self.fps
        stream = self._container.add_stream(name, rate=self.fps)
        stream.width, stream.height = self._coded
        stream.pix_fmt = "yuv420p"
        stream.time_base = self._tb
        stream.codec_context.time_base = self._tb
        if name == FALLBACK_ENCODER:
            stream.bit_rate = int(self._coded[0] * self._coded[1] * float(self.fps) * 0.25)  # 0.25 bit per pixel
        stream.options = options
        # no B-frames: with them the mp4 muxer derives the stream duration from decode times, which
        # lag the presentation times unevenly in variable-frame-rate video (reported length too short)
        stream.codec_context.max_b_frames = 0
        stream.thread_type = "AUTO"
        self.codec = name
        return stream

    # -- writing -----------------------------------------------------------------------------

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """Queue one (H, W, 3) uint8 BGR frame; `pts` in `time_base` units, None = one frame after the last."""
        if self._closed:
            raise RuntimeError("VideoWriter is closed")
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected a ({self.height}, {self.width}, 3) uint8 image, got {image.shape} {image.dtype}")
        if self._worker is None:
            self._guarded(self._encode, (image, pts))
        else:
            self._guarded(self._worker.submit, (image, pts))

    def _guarded(self, fn, *args) -> None:
        """Run `fn`, turning FFmpeg/OS failures (disk full...) into a one-line SipvisError."""
        try:
            fn(*args)
        except (av.error.FFmpegError, OSError) as exc:
            raise SipvisError(f"cannot write {self.path}: {reason(exc)}") from None

    def _encode(self, item: tuple[np.ndarray, int | None]) -> None:
        image, pts = item
        if self._coded != (self.width, self.height):
            image = np.pad(image, ((0, self._coded[1] - self.height), (0, self._coded[0] - self.width), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = self._next_pts(pts)
        frame.time_base = self._tb
        frame.duration = self._last_duration
        for packet in self._video.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1
        if self._audio is not None:
            self._audio.pump(self._seconds(frame.pts))  # audio up to this frame: the file stays interleaved

    def _next_pts(self, pts: int | None) -> int:
        """Encoder pts, from 0 and strictly increasing; the first frame also fixes where the audio starts."""
        if pts is not None and self._tb != self.time_base:
            pts = round(pts * self.time_base / self._tb)
        if self._first_pts is None:
            self._first_pts = pts if pts is not None else 0
            if self._audio is not None:
                self._audio.start(float(self._first_pts * self._tb) if pts is not None else None)
        if pts is None:
            out = 0 if self._last_pts is None else self._last_pts + self._frame_duration()
        else:
            out = pts - self._first_pts
        if self._last_pts is not None and out <= self._last_pts:
            if not self._warned_order:
                self._warned_order = True
                media_warning(f"{self.path.name}: frame timestamps out of order; shifted to keep them increasing")
            out = self._last_pts + 1
        # a frame lasts as long as the gap before it (exact for constant rate and for --vid-stride); the
        # last frame's duration sets where the file, and the copied audio, end
        self._last_duration = self._frame_duration() if self._last_pts is None else out - self._last_pts
        self._last_pts = out
        return out

    def _frame_duration(self) -> int:
        return max(1, round(1 / (self.fps * self._tb)))

    def _seconds(self, out_pts: int) -> float:
        return float(out_pts * self._tb)

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Encode what is queued, flush, add the rest of the audio, finish the file and move it into place.

        Safe to call twice. Without any frame written no file is created (a warning says so). After an
        error the temporary file is removed and a file already at `path` stays as it was; if only the final
        rename fails, the finished video is kept under its temporary name (the error says where).
        """
        if self._closed:
            return
        self._closed = True
        error: BaseException | None = None
        if self._worker is not None:
            try:
                self._guarded(self._worker.finish)
            except BaseException as exc:  # finish the file anyway; re-raised below
                error = exc
        if self.frames_written and error is None:  # after a failed write FFmpeg's state is not to be trusted
            try:
                self._guarded(self._flush)
            except BaseException as exc:
                error = error or exc
        error = error or self._close_container()
        if self.frames_written and error is None:
            try:
                publish(self._tmp, self.path)
            except OSError as exc:
                error = SipvisError(f"cannot write {self.path}: {reason(exc)}; the video is kept as {self._tmp}")
        else:
            _discard(self._tmp)
            if error is None:
                media_warning(f"no frame was written; {self.path} not created")
        if error is not None:
            raise error

    def abort(self) -> None:
        """Stop without creating the output: the frames written are dropped, a file already at `path` stays."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            try:
                self._worker.finish()
            except Exception:  # noqa: BLE001 - the file is dropped anyway
                pass
        self._close_container()
        _discard(self._tmp)

    def _close_container(self) -> SipvisError | None:
        """Close the container (writes the trailer and, with faststart, moves the index to the front) and
        the audio input; returns the error that stopped the trailer, if any."""
        error = None
        try:
            self._container.close()
        except (av.error.FFmpegError, OSError) as exc:
            error = SipvisError(f"cannot write {self.path}: {reason(exc)}")
        if self._audio is not None:
            self._audio.close()
        return error

    def _flush(self) -> None:
        for packet in self._video.encode(None):
            self._container.mux(packet)
        if self._audio is not None and self._last_pts is not None:
            self._audio.pump(self._seconds(self._last_pts + self._last_duration), final=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()  # keep what was written before the exception
        except Exception:  # noqa: BLE001 - the exception in flight is the one to report
            pass


def _discard(path: Path) -> None:
    """Remove a temporary file; one that cannot be removed (a folder turned read-only) keeps its telling name."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _encoder_opens(name: str, size: tuple[int, int], time_base: Fraction, options: dict[str, str]) -> bool:
    """Whether encoder `name` exists in this FFmpeg and opens with these settings (probed on a scratch context)."""
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height = size
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = time_base
        ctx.options = options
        ctx.open()
        return True
    except (av.error.FFmpegError, ValueError, av.codec.codec.UnknownCodecError):
        return False


class _AudioCopy:
    """Adds the audio of a source file to an output container over a time span of the source.

    The span begins at `start(origin)` (seconds on the source's clock; None = the source's
    start) and is extended by `pump(until)` (seconds from the origin). Packets are copied
    when the output takes the codec (`copyable`), else decoded and encoded to AAC.
    """

    def __init__(self, container: av.container.OutputContainer, source: str | Path, copyable: set[str] | None) -> None:
        try:
            self._input = av.open(str(source), "r")
        except (av.error.FFmpegError, OSError) as exc:
            raise SipvisError(f"cannot read audio from {source}: {reason(exc)}") from None
        self._in = self._input.streams.audio[0] if self._input.streams.audio else None
        self._packets = None
        self._origin = 0.0
        if self._in is None:
            self._out = None
            return
        codec = self._in.codec_context.name
        codec = "mp3" if codec.startswith("mp3") else codec  # the mp3 decoder is called mp3float
        self.copy = copyable is None or codec in copyable
        if self.copy:
            self._out = container.add_stream_from_template(self._in)
        else:
            ctx = self._in.codec_context
            self._out = container.add_stream("aac", rate=ctx.sample_rate)
            # by channel count: sources may carry an unnamed order ("1 channels") that AAC rejects;
            # more than two channels are mixed down to stereo by the resampler
            self._out.layout = "mono" if ctx.layout.nb_channels == 1 else "stereo"
            # 64 kbit/s per channel, within AAC's ceiling of 6 bits per sample (low sample rates)
            self._out.bit_rate = min(64_000, 6 * ctx.sample_rate) * self._out.layout.nb_channels
            self._resampler = av.AudioResampler(format="fltp", layout=self._out.layout, rate=ctx.sample_rate)

    def start(self, origin: float | None) -> None:
        if self._in is None:
            return
        tb = self._in.time_base
        if origin is None:  # frames had no pts: the video starts where the source starts
            origin = float(min((s.start_time or 0) * s.time_base for s in self._input.streams if s.time_base))
        self._origin = origin
        if origin > 1.0:
            try:
                self._input.seek(int(origin / tb), stream=self._in, backward=True)
            except (av.error.FFmpegError, OSError):
                pass  # reading from the start and dropping early packets gives the same result
        self._packets = self._input.demux(self._in)
        self._pending: av.Packet | None = None

    def pump(self, until: float, final: bool = False) -> None:
        """Write audio up to `until` seconds after the origin (`final`: flush the encoder)."""
        if self._in is None or self._packets is None:
            return
        tb = self._in.time_base
        while True:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None or packet.pts is None:
                if packet is None:
                    self._packets = iter(())
                    break
                continue
            t = float(packet.pts * tb) - self._origin
            if t < -1e-6:
                continue
            if t >= until - 1e-6:
                self._pending = packet  # belongs to a later pump
                break
            if self.copy:
                shift = round(self._origin / tb)
                packet.pts -= shift
                packet.dts = packet.pts if packet.dts is None else packet.dts - shift
                packet.stream = self._out
                self._out.container.mux(packet)
            else:
                try:
                    frames = self._in.decode(packet)
                except av.error.FFmpegError:
                    continue  # a damaged audio packet: a few ms of silence
                for frame in frames:
                    frame.pts = None  # the encoder counts samples from 0
                    for resampled in self._resampler.resample(frame):
                        for out in self._out.encode(resampled):
                            self._out.container.mux(out)
        if final and not self.copy:
            for out in self._out.encode(None):
                self._out.container.mux(out)

    def close(self) -> None:
        self._input.close()
