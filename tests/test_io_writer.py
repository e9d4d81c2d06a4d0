"""VideoWriter: read -> render -> write round trips on the real clips, checked by decoding the output with
PyAV (frame count, size, rate, duration, audio copied over the same span), timestamps, interruption, and
the failure modes (unwritable location, disk full, no H.264 encoder)."""

from __future__ import annotations

import os
import warnings
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import MEDIA, require
from test_io_readers import CLIPS, make_clip

from sipvis.errors import SipvisError
from sipvis.io import MediaWarning, Renderer, VideoWriter, open_source
from sipvis.io import video_writer as video_writer_module
from sipvis.results import FrameInstances

N = 40  # frames of each real clip used: keeps the test fast


def moving_box(index: int, height: int, width: int, timestamp: float | None) -> FrameInstances:
    """One instance (track 1, class 0) whose square mask moves right by 4 px per frame."""
    x = (8 + 4 * index) % max(1, width - 60)
    masks = np.zeros((1, height, width), bool)
    masks[0, 20:70, x : x + 50] = True
    return FrameInstances(
        index, height, width, np.array([[x, 20, x + 50, 70]], np.float32), np.array([0.9], np.float32),
        np.array([0]), np.array([1]), masks, timestamp,
    )  # fmt: skip


def probe(path: Path) -> dict:
    """What a player sees, straight from PyAV: video codec/size/rate/frames/duration, audio codec/duration."""
    info: dict = {}
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info.update(codec=v.codec_context.name, pix_fmt=v.codec_context.format.name, size=(v.width, v.height))
        info.update(rate=v.average_rate, duration=c.duration / 1e6 if c.duration else None)
        frames = [(f.time, f.to_ndarray(format="bgr24")) for f in c.decode(v)]
        info.update(frames=len(frames), times=[t for t, _ in frames], images=[im for _, im in frames])
    with av.open(str(path)) as c:
        a = c.streams.audio[0] if c.streams.audio else None
        if a is not None:
            packets = [p for p in c.demux(a) if p.dts is not None]
            end = packets[-1].pts + packets[-1].duration
            info.update(audio=a.codec_context.name, audio_end=float(end * a.time_base), audio_packets=packets)
    return info


def source_audio_packets(path: Path) -> list[av.Packet]:
    with av.open(str(path)) as c:
        return [p for p in c.demux(audio=0) if p.dts is not None]


@pytest.mark.parametrize("name", list(CLIPS))
def test_round_trip_keeps_size_rate_duration_and_audio(tmp_path: Path, name: str) -> None:
    path = require(MEDIA / name)
    width, height, fps, _, has_audio = CLIPS[name]
    source = open_source(path, max_frames=N)
    renderer = Renderer(["thing"])
    out = tmp_path / "out.mp4"
    drawn = []
    with VideoWriter(out, source.width, source.height, source.fps, source.time_base,
                     audio_from=source.spec if source.has_audio else None) as writer:  # fmt: skip
        for frame in source:
            image = renderer.draw(frame.image, moving_box(frame.index, source.height, source.width, frame.timestamp))
            drawn.append(image)
            writer.write(image, frame.pts)
    assert writer.codec == "libx264"
    info = probe(out)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["size"] == (width, height)
    assert info["rate"] == fps
    assert info["frames"] == N
    assert info["times"] == pytest.approx([i / float(fps) for i in range(N)], abs=1e-3)
    assert info["duration"] == pytest.approx(N / float(fps), abs=0.02)
    for k in (0, N // 2, N - 1):  # the right frames in the right order, at near-lossless quality
        assert np.abs(info["images"][k].astype(int) - drawn[k]).mean() < 3.0
    if not has_audio:
        assert "audio" not in info
        return
    # copied, not re-encoded: the output's packets are the source's first packets, byte for byte
    assert info["audio"] == {"bigbuckbunny.mp4": "aac", "cockatoo.mp4": "mp3float", "car-detection.mp4": "aac"}[name]
    src_packets = source_audio_packets(path)
    out_packets = info["audio_packets"]
    # (FFmpeg's MP4 muxer replaces the two LAME header frames that open an MP3 stream by plain silent
    # frames of the same size; everything after them is copied unchanged)
    skip = 2 if info["audio"] == "mp3float" else 0
    assert [bytes(p) for p in out_packets[skip:]] == [bytes(p) for p in src_packets[skip : len(out_packets)]]
    assert [p.size for p in out_packets] == [p.size for p in src_packets[: len(out_packets)]]
    assert info["audio_end"] == pytest.approx(N / float(fps), abs=0.08)  # one audio frame at most


def test_start_window_takes_the_audio_of_the_same_span(tmp_path: Path) -> None:
    path = require(MEDIA / "car-detection.mp4")  # 12.5 fps, AAC 48 kHz
    source = open_source(path, start=2.0, max_frames=25)
    out = tmp_path / "window.mkv"
    with VideoWriter(out, source.width, source.height, source.fps, source.time_base, audio_from=source.spec) as writer:
        for frame in source:
            writer.write(frame.image, frame.pts)
    info = probe(out)
    assert info["frames"] == 25 and info["times"][0] == 0.0
    assert info["duration"] == pytest.approx(2.0, abs=0.05)
    src = source_audio_packets(path)
    tb = src[0].time_base
    first = next(i for i, p in enumerate(src) if p.pts * tb >= 2.0 - 1e-6)
    out_packets = info["audio_packets"]
    assert bytes(out_packets[0]) == bytes(src[first])  # the audio starts at the video's first frame...
    shift = float(out_packets[0].pts * out_packets[0].time_base) - float(src[first].pts * tb)
    assert shift == pytest.approx(-2.0, abs=1e-3)  # ...and keeps its offset from it (to the millisecond)
    assert info["audio_end"] == pytest.approx(2.0, abs=0.03)


@pytest.mark.parametrize("ext", [".avi", ".mov"])
def test_other_containers(tmp_path: Path, ext: str) -> None:
    path = require(MEDIA / "car-detection.mp4")  # 12.5 fps with AAC: AVI stores a rate, not timestamps
    source = open_source(path, max_frames=20, vid_stride=2)
    out = tmp_path / f"out{ext}"
    with VideoWriter(out, source.width, source.height, source.fps, source.time_base, audio_from=source.spec) as writer:
        for frame in source:
            writer.write(frame.image, frame.pts)
    info = probe(out)
    assert info["codec"] == ("mpeg4" if ext == ".avi" else "h264")
    assert info["frames"] == 20 and info["audio"] == "aac"
    assert info["times"] == pytest.approx([0.16 * i for i in range(20)], abs=1e-3)  # every other frame of 12.5 fps
    assert info["audio_end"] == pytest.approx(20 * 0.16, abs=0.05)


def test_variable_frame_rate_timestamps_survive_the_writer(tmp_path: Path) -> None:
    pts_ms = [0, 40, 80, 200, 210, 220, 500, 540, 580, 1000]
    make_clip(tmp_path / "vfr.mp4", pts_ms=pts_ms)
    source = open_source(tmp_path / "vfr.mp4", vid_stride=2)
    with VideoWriter(tmp_path / "out.mp4", source.width, source.height, source.fps, source.time_base) as writer:
        for frame in source:
            writer.write(frame.image, frame.pts)
    info = probe(tmp_path / "out.mp4")
    assert info["times"] == pytest.approx([0.0, 0.08, 0.21, 0.5, 0.58])


def test_image_sequence_with_stride_keeps_its_spacing(tmp_path: Path) -> None:
    frames = make_clip(tmp_path / "x.mp4", n=10)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.png"), image)
    source = open_source(folder, vid_stride=3, fps=10)
    with VideoWriter(tmp_path / "out.mp4", source.width, source.height, source.fps, source.time_base) as writer:
        for frame in source:
            writer.write(frame.image, frame.pts)
    assert probe(tmp_path / "out.mp4")["times"] == pytest.approx([0.0, 0.3, 0.6, 0.9])


@pytest.mark.parametrize("threaded", [True, False])
@pytest.mark.parametrize("interrupt", [RuntimeError, KeyboardInterrupt])
def test_interrupted_run_leaves_a_playable_file(tmp_path: Path, threaded: bool, interrupt: type) -> None:
    frames = make_clip(tmp_path / "src.mp4", n=12)
    out = tmp_path / "out.mp4"
    with pytest.raises(interrupt):
        with VideoWriter(out, 64, 48, 25, threaded=threaded) as writer:
            for image in frames[:7]:
                writer.write(image)
            raise interrupt("stop")
    info = probe(out)
    assert info["frames"] == 7 and info["duration"] == pytest.approx(7 / 25, abs=1e-3)
    assert [int(im[30, 40, 1]) for im in info["images"]] == pytest.approx([20 * i for i in range(7)], abs=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "src.mp4"]  # no temporary left


def test_unwritable_locations_are_one_line_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(SipvisError, match=f"cannot write into {blocker}/sub: {blocker} is a file, not a folder"):
        VideoWriter(blocker / "sub" / "out.mp4", 64, 48, 25)
    with pytest.raises(SipvisError, match=r"cannot write video out.webm: use one of \.mp4, \.m4v, \.mov, \.mkv, \.avi"):
        VideoWriter(tmp_path / "out.webm", 64, 48, 25)
    out = tmp_path / "new" / "deeper" / "out.mkv"  # missing folders are created
    with VideoWriter(out, 64, 48, 25) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
    assert probe(out)["frames"] == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(SipvisError, match="cannot write .*out.mp4: Permission denied"):
            VideoWriter(folder / "out.mp4", 64, 48, 25)
    finally:
        folder.chmod(0o700)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_disk_full_is_a_one_line_error_and_leaves_no_broken_file(tmp_path: Path, monkeypatch) -> None:
    import os

    from sipvis.io import video_writer

    out = tmp_path / "out.mp4"
    full = tmp_path / ".out.mp4.disk-full.partial.mp4"
    full.symlink_to("/dev/full")  # where the writer puts the file until close
    monkeypatch.setattr(video_writer, "temp_file_beside", lambda path, keep_suffix=False: (os.open(os.devnull, os.O_RDONLY), full))
    rng = np.random.default_rng(0)
    with pytest.raises(SipvisError, match=f"cannot write {out}: No space left on device"):
        with VideoWriter(out, 320, 240, 25) as writer:
            for _ in range(50):  # noise does not compress: the muxer's buffer fills quickly
                writer.write(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    assert not out.exists()


def test_audio_the_container_cannot_hold_is_transcoded_to_aac(tmp_path: Path) -> None:
    make_clip(tmp_path / "pcm.mkv", n=25, audio="pcm_s16le")
    source = open_source(tmp_path / "pcm.mkv")
    assert source.has_audio
    with VideoWriter(tmp_path / "out.mp4", 64, 48, source.fps, source.time_base, audio_from=source.spec) as writer:
        for frame in source:
            writer.write(frame.image, frame.pts)
    info = probe(tmp_path / "out.mp4")
    assert info["frames"] == 25 and info["audio"] == "aac"
    assert info["audio_end"] == pytest.approx(1.0, abs=0.07)
    with av.open(str(tmp_path / "out.mp4")) as c:  # the tone survives: 440 Hz dominates the spectrum
        samples = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    spectrum = np.abs(np.fft.rfft(samples[2048:10240]))
    assert np.fft.rfftfreq(8192, 1 / 16000)[spectrum.argmax()] == pytest.approx(440, abs=4)


def test_without_h264_encoder_falls_back_to_mpeg4_with_one_warning(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(video_writer_module, "H264_ENCODERS", ("no-such-encoder",))
    frames = make_clip(tmp_path / "src.mp4", n=5)
    with pytest.warns(MediaWarning, match="no H.264 encoder") as record:
        with VideoWriter(tmp_path / "out.mp4", 64, 48, 25, time_base=Fraction(1, 90000)) as writer:
            for i, image in enumerate(frames):
                writer.write(image, 3600 * i)
    assert len(record) == 1
    info = probe(tmp_path / "out.mp4")
    assert info["codec"] == "mpeg4" and info["frames"] == 5
    assert info["times"] == pytest.approx([0, 0.04, 0.08, 0.12, 0.16])


def test_odd_size_is_padded_and_no_frame_means_no_file(tmp_path: Path) -> None:
    with pytest.warns(MediaWarning, match="63x47 padded to 64x48"):
        writer = VideoWriter(tmp_path / "odd.mp4", 63, 47, 25)
    with writer:
        writer.write(np.full((47, 63, 3), 200, np.uint8))
    info = probe(tmp_path / "odd.mp4")
    assert info["size"] == (64, 48) and info["frames"] == 1
    assert np.abs(info["images"][0].astype(int) - 200).max() <= 6  # padding repeats the edge, not black
    with pytest.warns(MediaWarning, match="no frame was written"):
        with VideoWriter(tmp_path / "empty.mp4", 64, 48, 25):
            pass
    assert not (tmp_path / "empty.mp4").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with VideoWriter(tmp_path / "w.mp4", 64, 48, 25) as writer:
            with pytest.raises(ValueError, match=r"expected a \(48, 64, 3\) uint8 image"):
                writer.write(np.zeros((48, 64), np.uint8))
            writer.write(np.zeros((48, 64, 3), np.uint8))


def test_each_writer_has_its_own_temporary_file_with_the_extension_last(tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    with VideoWriter(out, 64, 48, 25) as a, VideoWriter(out, 64, 48, 25) as b:
        assert a._tmp != b._tmp and a._tmp.parent == tmp_path
        assert all(w._tmp.name.startswith(".out.mkv.") and w._tmp.name.endswith(".partial.mkv") for w in (a, b))
        a.write(np.zeros((48, 64, 3), np.uint8))
        b.write(np.zeros((48, 64, 3), np.uint8))
    assert out.exists() and not list(tmp_path.glob(".out.mkv.*"))
