"""Readers: real clips (metadata and decoded frames checked against PyAV directly), generated clips with
rotation / variable frame rate / damaged packets, image folders and globs, the window options, URLs,
and the one-line errors."""

from __future__ import annotations

import functools
import http.server
import threading
import warnings
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import MEDIA, QuietHTTPServer, require

from sipvis.errors import SipvisError
from sipvis.io import MediaWarning, expand_inputs, open_source

# name -> (width, height, fps, frames, has_audio), from ../shared/media/README.md
CLIPS = {
    "bikes.mp4": (640, 272, Fraction(25), 250, False),
    "bigbuckbunny.mp4": (1280, 720, Fraction(25), 132, True),
    "vtest.avi": (768, 576, Fraction(10), 795, False),
    "cockatoo.mp4": (1280, 720, Fraction(20), 280, True),
    "car-detection.mp4": (768, 432, Fraction(25, 2), 377, True),
}


def make_clip(
    path: Path,
    n: int = 12,
    size: tuple[int, int] = (64, 48),
    pts_ms: list[int] | None = None,
    rotation: float | None = None,
    codec: str = "libx264",
    audio: str | None = None,
) -> list[np.ndarray]:
    """Write a small clip (time base 1 ms; 40 ms in AVI) whose frame i has a white 8x16 block in the top-left corner
    and green level 20*i mod 256; optionally with a display rotation, given timestamps, and a 440 Hz audio
    track in codec `audio`. Returns the BGR frames written."""
    w, h = size
    tb = Fraction(1, 1000)
    pts_ms = pts_ms or [40 * i for i in range(n)]
    if path.suffix == ".avi":  # AVI has no timestamps, only a frame rate: count in frames of 40 ms
        tb, pts_ms = Fraction(1, 25), [p // 40 for p in pts_ms]
    frames = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.time_base = stream.codec_context.time_base = tb
        stream.codec_context.max_b_frames = 0
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if audio:
            astream = out.add_stream(audio, rate=16000)
            astream.layout = "mono"
        for i, pts in enumerate(pts_ms):
            image = np.zeros((h, w, 3), np.uint8)
            image[..., 1] = 20 * i % 256
            image[:8, :16] = 255
            frames.append(image)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = pts, tb
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if audio:
            total = int(16000 * (float(pts_ms[-1] * tb) + 0.04))  # as long as the video
            t = np.arange(total) / 16000
            samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)[None]
            aframe = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            aframe.sample_rate, aframe.pts = 16000, 0
            for packet in astream.encode(aframe):
                out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)
    return frames


def pyav_frames(path: Path, limit: int | None = None) -> list[av.VideoFrame]:
    """Decode with PyAV directly (the oracle), no rotation, as BGR arrays with their pts."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            out.append((frame.pts, frame.to_ndarray(format="bgr24")))
            if limit is not None and len(out) >= limit:
                break
    return out


# -- real clips --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CLIPS))
def test_real_clip_metadata_and_frames(name: str) -> None:
    path = require(MEDIA / name)
    width, height, fps, count, has_audio = CLIPS[name]
    with open_source(path, max_frames=40) as source:
        assert (source.width, source.height) == (width, height)
        assert source.fps == fps
        assert source.frame_count == count
        assert source.duration == pytest.approx(count / fps, abs=0.05)
        assert source.has_audio is has_audio
        assert source.rotation == 0 and source.name == Path(name).stem and not source.is_live
        assert source.expected_frames == 40
        frames = list(source)
    oracle = pyav_frames(path, limit=40)
    assert [f.index for f in frames] == list(range(40))
    assert [f.pts for f in frames] == [pts for pts, _ in oracle]
    tb = source.time_base
    assert [f.timestamp for f in frames] == pytest.approx([float(p * tb) for p, _ in oracle])
    assert frames[1].timestamp == pytest.approx(1 / fps)
    for frame, (_, image) in zip(frames[::13], oracle[::13]):
        assert frame.image.shape == (height, width, 3) and frame.image.dtype == np.uint8
        assert frame.image.flags.c_contiguous
        np.testing.assert_array_equal(frame.image, image)


def test_full_decode_counts_every_frame_of_vtest_avi() -> None:
    # MS-MPEG4 v3 in AVI: a legacy codec in a non-MP4 container
    path = require(MEDIA / "vtest.avi")
    frames = list(open_source(path))
    assert len(frames) == 795
    assert frames[-1].index == 794 and frames[-1].timestamp == pytest.approx(79.4)


def test_yuv444_cockatoo_converts_to_the_same_bgr_as_ffmpeg() -> None:
    path = require(MEDIA / "cockatoo.mp4")
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.format.name == "yuv444p"
    frames = list(open_source(path, start=10.0, max_frames=3))
    assert [f.index for f in frames] == [200, 201, 202]
    oracle = dict(pyav_frames(path))
    for frame in frames:
        np.testing.assert_array_equal(frame.image, oracle[frame.pts])


def test_window_start_end_stride_max_frames_on_a_real_clip() -> None:
    path = require(MEDIA / "vtest.avi")  # 10 fps
    source = open_source(path, start=10.0, end=12.0, vid_stride=3)
    frames = list(source)
    assert [f.index for f in frames] == [100, 103, 106, 109, 112, 115, 118]
    assert [f.timestamp for f in frames] == pytest.approx([10.0, 10.3, 10.6, 10.9, 11.2, 11.5, 11.8])
    assert source.expected_frames == 7
    oracle = dict(pyav_frames(path, limit=120))
    for frame in frames:  # the seek landed on the right frames, not just the right labels
        np.testing.assert_array_equal(frame.image, oracle[frame.pts])
    frames = list(open_source(path, vid_stride=4, max_frames=5))
    assert [f.index for f in frames] == [0, 4, 8, 12, 16]
    frames = list(open_source(path, start=78.0))
    assert [f.index for f in frames] == list(range(780, 795))


def test_stopping_early_releases_the_decoder_thread() -> None:
    path = require(MEDIA / "bikes.mp4")
    before = threading.active_count()
    source = open_source(path, queue_size=2)
    for i, _ in enumerate(source):
        if i == 2:
            break
    assert threading.active_count() == before
    assert len(list(source)) == 250  # a second pass decodes again, from the start


# -- generated clips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rotation, corner",
    [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right"), (0, "top-left")],
)
def test_rotation_metadata_is_applied(tmp_path: Path, rotation: int, corner: str) -> None:
    # display rotation is counter-clockwise: the block in the top-left corner moves to `corner`
    path = tmp_path / "rot.mp4"
    make_clip(path, n=3, size=(64, 48), rotation=rotation)
    source = open_source(path)
    turned = rotation % 180 != 0
    assert (source.width, source.height) == ((48, 64) if turned else (64, 48))
    assert source.rotation == rotation % 360
    frame = next(iter(source))
    assert frame.image.shape == (source.height, source.width, 3)
    h, w = frame.image.shape[:2]
    corners = {"top-left": (0, 0), "top-right": (0, w - 1), "bottom-left": (h - 1, 0), "bottom-right": (h - 1, w - 1)}
    bright = {name for name, (y, x) in corners.items() if frame.image[y, x, 0] > 200}
    assert bright == {corner}


@pytest.mark.parametrize(
    "name, codec",
    [("a.mkv", "libx265"), ("b.webm", "libvpx-vp9"), ("c.avi", "mjpeg"), ("d.mov", "libx264"), ("e.mp4", "mpeg4")],
)
def test_containers_and_codecs(tmp_path: Path, name: str, codec: str) -> None:
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - this FFmpeg build lacks the encoder
        pytest.skip(f"no {codec} encoder to make the clip")
    path = tmp_path / name
    written = make_clip(path, n=8, size=(96, 64), codec=codec)
    source = open_source(path)
    assert (source.width, source.height, source.fps) == (96, 64, 25)
    frames = list(source)
    assert [f.index for f in frames] == list(range(8))
    for frame, image in zip(frames, written):
        assert np.abs(frame.image.astype(int) - image).mean() < 4


def test_variable_frame_rate_timestamps_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "vfr.mp4"
    pts_ms = [0, 40, 80, 200, 210, 220, 500, 540, 580, 1000]
    make_clip(path, pts_ms=pts_ms)
    frames = list(open_source(path))
    assert [f.index for f in frames] == list(range(10))
    assert [f.timestamp for f in frames] == pytest.approx([p / 1000 for p in pts_ms])
    assert [f.image[20, 40, 1] for f in frames] == pytest.approx([20 * i for i in range(10)], abs=3)
    frames = list(open_source(path, start=0.2, end=0.6))
    assert [f.timestamp for f in frames] == pytest.approx([0.2, 0.21, 0.22, 0.5, 0.54, 0.58])


def _remux_first_packets(source: Path, dest: Path, n: int, damage: int | None) -> None:
    """Copy the first `n` video packets of `source`; replace packet `damage` by noise of the same size."""
    with av.open(str(source)) as src, av.open(str(dest), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for k, packet in enumerate(src.demux(video=0)):
            if packet.dts is None or k >= n:
                continue
            if k == damage:
                noise = np.random.default_rng(0).integers(0, 256, packet.size, dtype=np.uint8)
                damaged = av.Packet(noise.tobytes())
                damaged.pts, damaged.dts, damaged.time_base = packet.pts, packet.dts, packet.time_base
                packet = damaged
            packet.stream = out
            dst.mux(packet)


def test_damaged_packet_is_skipped_with_a_warning(tmp_path: Path) -> None:
    source = require(MEDIA / "bikes.mp4")
    _remux_first_packets(source, tmp_path / "good.mp4", 60, damage=None)
    _remux_first_packets(source, tmp_path / "bad.mp4", 60, damage=20)  # packet 20 holds the frame at 0.88 s
    good = list(open_source(tmp_path / "good.mp4"))
    with pytest.warns(MediaWarning, match=r"bad: damaged packet at 0\.880 s skipped \(Invalid data"):
        frames = list(open_source(tmp_path / "bad.mp4"))
    assert len(frames) == len(good) - 1  # one frame lost, decoding went on to the end
    assert [f.index for f in frames] == list(range(len(frames)))
    assert np.all(np.diff([f.timestamp for f in frames]) > 0)
    assert frames[-1].timestamp >= good[-1].timestamp - 0.04


def test_truncated_file_decodes_up_to_the_cut(tmp_path: Path) -> None:
    path = tmp_path / "cut.mkv"
    make_clip(path, n=40, size=(320, 240), codec="mjpeg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MediaWarning)
        frames = list(open_source(path))
    assert 10 <= len(frames) < 40
    assert [f.index for f in frames] == list(range(len(frames)))


def test_stream_over_http(tmp_path: Path) -> None:
    from sipvis.io import VideoWriter

    frames = make_clip(tmp_path / "src.mp4", n=10)
    with VideoWriter(tmp_path / "served.mp4", 64, 48, 25) as writer:  # faststart: readable front to back
        for image in frames:
            writer.write(image)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    server = QuietHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/served.mp4"
        source = open_source(url)
        assert source.name == "served" and (source.width, source.height) == (64, 48)
        decoded = list(source)
        with pytest.raises(SipvisError, match="cannot open http://127.0.0.1:.*/missing.mp4"):
            open_source(url.replace("served", "missing"))
    finally:
        server.shutdown()
        server.server_close()
    assert len(decoded) == 10
    assert [int(f.image[20, 40, 1]) for f in decoded] == pytest.approx([20 * i for i in range(10)], abs=4)


# -- image sequences ---------------------------------------------------------------------------


def _write_images(folder: Path, n: int, ext: str = ".jpg", size: tuple[int, int] = (40, 30)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = np.full((size[1], size[0], 3), 10 * i, np.uint8)
        assert cv2.imwrite(str(folder / f"{5 * i:05d}{ext}"), image)  # YouTube-VIS names: every 5th frame


def test_image_folder_in_youtube_vis_layout(tmp_path: Path) -> None:
    folder = tmp_path / "JPEGImages" / "0a2f4b"
    _write_images(folder, 12)
    (folder / "notes.txt").write_text("not an image")
    source = open_source(folder)
    assert (source.name, source.width, source.height, source.frame_count) == ("0a2f4b", 40, 30, 12)
    assert source.fps == 30 and source.duration == pytest.approx(12 / 30)
    frames = list(source)
    assert [f.index for f in frames] == list(range(12))
    assert [int(f.image[5, 5, 0]) for f in frames] == pytest.approx([10 * i for i in range(12)], abs=2)
    assert all(f.timestamp is None for f in frames)
    assert [f.pts for f in frames] == list(range(12)) and frames[0].time_base == Fraction(1, 30)
    frames = list(open_source(folder, vid_stride=5, max_frames=2))
    assert [f.index for f in frames] == [0, 5]
    frames = list(open_source(folder, start=0.1, end=0.2, fps=30))  # frames 3, 4, 5
    assert [f.index for f in frames] == [3, 4, 5]
    assert expand_inputs([tmp_path / "JPEGImages"]) == [str(folder)]


def test_glob_and_natural_order(tmp_path: Path) -> None:
    for i in [1, 2, 10]:
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 8, 3), i, np.uint8))
    source = open_source(str(tmp_path / "f*.png"))
    assert source.name == tmp_path.name
    assert [int(f.image[0, 0, 0]) for f in source] == [1, 2, 10]  # f2 before f10
    assert expand_inputs([str(tmp_path / "*.png")]) == [str(tmp_path / "*.png")]


def test_unreadable_image_is_skipped_and_size_change_is_an_error(tmp_path: Path) -> None:
    _write_images(tmp_path, 4, ".png")
    (tmp_path / "00007.png").write_bytes(b"broken")  # sorts between 00005 and 00010
    with pytest.warns(MediaWarning, match="00007.png: not a readable image"):
        frames = list(open_source(tmp_path))
    assert [f.index for f in frames] == [0, 1, 3, 4]
    cv2.imwrite(str(tmp_path / "00099.png"), np.zeros((31, 40, 3), np.uint8))
    with pytest.raises(SipvisError, match="00099.png is 40x31 but the sequence started at 40x30"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MediaWarning)
            list(open_source(tmp_path))


def test_expand_inputs_folder_of_videos_and_mixed(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ["b10.mp4", "b2.mkv", "a.avi"]:
        (videos / name).write_bytes(b"")
    (videos / "readme.txt").write_text("x")
    _write_images(videos / "seq", 2)
    expected = [str(videos / n) for n in ["a.avi", "b2.mkv", "b10.mp4", "seq"]]
    assert expand_inputs([videos]) == expected
    assert expand_inputs([videos, videos / "a.avi", "rtsp://cam/x", 0]) == expected + ["rtsp://cam/x", 0]
    assert expand_inputs(str(videos / "b*")) == [str(videos / "b2.mkv"), str(videos / "b10.mp4")]
    _write_images(videos, 1)
    with pytest.raises(SipvisError, match="holds both images and videos"):
        expand_inputs([videos])
    (videos / "00000.jpg").unlink()
    with pytest.raises(SipvisError, match="holds 4 videos or image sequences; open them one at a time"):
        open_source(videos)


# -- errors ------------------------------------------------------------------------------------


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    empty = tmp_path / "empty"
    empty.mkdir()
    audio_only = tmp_path / "tone.m4a"
    with av.open(str(audio_only), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    (tmp_path / "zero.mp4").write_bytes(b"")
    cases = {
        tmp_path / "missing.mp4": f"input not found: {tmp_path / 'missing.mp4'}",
        tmp_path / "zero.mp4": f"{tmp_path / 'zero.mp4'} is an empty file",
        text: f"not a video file sipvis can read: {text}",
        empty: f"no images or videos in {empty}",
        audio_only: f"{audio_only} has no video stream",
        str(tmp_path / "nothing*.jpg"): f"no files match {tmp_path / 'nothing*.jpg'}",
    }
    for spec, message in cases.items():
        with pytest.raises(SipvisError) as info:
            open_source(spec)
        assert str(info.value) == message
        assert "\n" not in str(info.value)
    with pytest.raises(SipvisError, match="input not found"):
        expand_inputs([tmp_path / "missing.mp4"])
    with pytest.raises(SipvisError, match="vid_stride must be at least 1"):
        open_source(text, vid_stride=0)


def test_zero_frames_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "zero.mkv"
    with av.open(str(path), "w") as out:  # a valid header with a video stream and no packet
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
    with pytest.raises(SipvisError, match=f"no frame could be decoded from {path}"):
        open_source(path)


def test_side_data_is_read_with_either_pyav_api():
    """PyAV <= 18 iterates over a frame's side-data entries, PyAV 19 over their types (a Mapping).
    The rotation code must see the entries with both (PyAV 19 is what Python 3.12+ installs)."""
    from sipvis.io.video import _side_data

    class Entry:
        type = "DISPLAYMATRIX"

    entry = Entry()

    class OldFrame:
        side_data = [entry]

    class NewFrame:
        side_data = {"DISPLAYMATRIX": entry}

    assert list(_side_data(OldFrame())) == [entry]
    assert list(_side_data(NewFrame())) == [entry]
