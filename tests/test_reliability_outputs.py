"""Reliability of `sipvis track`'s outputs (issue 14, items 1, 3, 6): every output is finalised whatever
another does and the first error decides the exit; a failed output never replaces what was at its path;
outputs never overwrite inputs and are all written, several of one kind included; an unreadable frame
keeps its position in every output. Full disks are small tmpfs mounts (root only, else skipped), read-only
folders are read-only mounts (root) or folders without write permission. Every input is generated here."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from models import tiny_checkpoint
from sipvis.errors import SipvisError

FRAMES = 40  # of the generated clip
SENTINEL = b"an earlier run's output, which a failed run must not destroy\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 160x120 noise clip: its annotated video is large, so it fills a small disk within a few frames."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for _ in range(FRAMES):
            image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def track(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sipvis.cli import main; main()", "track", *map(str, args),
                           "--quiet"], capture_output=True, text=True, timeout=600)


def one_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The run failed with exit status 1, one `Error:` line holding every fragment, and no traceback."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert all(f in errors[0] for f in fragments), result.stderr
    return errors[0]


def video_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def json_frames(path: Path) -> int:
    """The number of frames of a valid single-video results file (every entry has one per frame)."""
    entries = json.loads(path.read_text())
    lengths = {len(e["segmentations"]) for e in entries}
    assert entries and len(lengths) == 1, lengths
    return lengths.pop()


def mots_frames(path: Path) -> set[int]:
    frames = set()
    for line in path.read_text().splitlines():
        frame, _, _, h, w, rle = line.split(" ")
        assert mask_utils.decode({"size": [int(h), int(w)], "counts": rle.encode()}).any()
        frames.add(int(frame))
    return frames


def leftovers(folder: Path) -> list[str]:
    """Temporary outputs left behind (`.NAME.XXXXXXXX.partial...`)."""
    return sorted(p.name for p in folder.rglob(".*partial*"))


# -- item 3: outputs never overwrite inputs, and every -o is written -----------------------------------------


@pytest.mark.slow
def test_several_outputs_of_one_kind_are_all_written(tiny, clip, tmp_path):
    outs = [tmp_path / name for name in ("a.mp4", "b.mkv", "a.json", "b.json", "a.txt", "b.txt")]
    result = track(clip, "--weights", tiny, "--max-frames", 6, *[a for p in outs for a in ("-o", p)])
    assert result.returncode == 0, result.stderr
    assert video_frames(outs[0]) == video_frames(outs[1]) == 6
    assert json_frames(outs[2]) == 6 and outs[2].read_text() == outs[3].read_text()
    assert mots_frames(outs[4]) == set(range(6)) and outs[4].read_text() == outs[5].read_text()
    # several inputs: every shared results file holds every video
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:05d}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    result = track(clip, frames, "--weights", tiny, "--max-frames", 3, "-o", tmp_path / "x.json", "-o", tmp_path / "y.json")
    assert result.returncode == 0, result.stderr
    for name in ("x.json", "y.json"):
        assert {e["video_id"] for e in json.loads((tmp_path / name).read_text())} == {1, 2}


def _refused_case(kind: str, clip: Path, tmp_path: Path) -> tuple[list, tuple[str, ...]]:
    """(track arguments, fragments of the error line) of one refused output plan."""
    if kind == "same path":
        return [clip, "-o", clip], (f"output {clip} is the input {clip}",)
    if kind == "hard link":
        link = tmp_path / "link.mp4"
        os.link(clip, link)
        return [clip, "-o", link], (f"output {link} is the input {clip}",)
    if kind == "symbolic link":
        link = tmp_path / "link.mp4"
        link.symlink_to(clip)
        return [link, "-o", clip], (f"output {clip} is the input {link}",)
    if kind == "folder of inputs":  # clips/clip.mp4 -> clips/clip.mp4
        return [clip.parent, "-o", clip.parent], (f"output {clip} is the input {clip}",)
    if kind == "given twice":
        out = tmp_path / "out.mp4"
        return [clip, "-o", out, "-o", out], (f"output {out} is given twice",)
    folder = tmp_path / "out.mp4"  # an existing folder named like a video
    folder.mkdir()
    return [clip, "-o", folder], (f"cannot write {folder}: it is a folder",)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["same path", "hard link", "symbolic link", "folder of inputs", "given twice",
                                  "existing folder"])
def test_an_output_that_would_destroy_data_is_refused(tiny, clip, tmp_path, kind):
    before = clip.read_bytes()
    args, fragments = _refused_case(kind, clip, tmp_path)
    one_error(track(*args, "--weights", tiny, "--max-frames", 2), *fragments)
    assert clip.read_bytes() == before
    assert not leftovers(tmp_path) and not leftovers(clip.parent)


def test_planning_names_both_files_and_keeps_every_output(tmp_path):
    from sipvis.engine.track_run import plan_outputs

    video = tmp_path / "in.mp4"
    video.write_bytes(b"x")
    os.link(video, tmp_path / "same.mp4")
    with pytest.raises(SipvisError, match=f"output {tmp_path / 'same.mp4'} is the input {video}; choose another"):
        plan_outputs(["in"], [str(tmp_path / "same.mp4")], (), [video])
    frames = tmp_path / "in_png"  # the PNG folder `-o tmp_path/` gives the input `in.mp4`
    frames.mkdir()
    (frames / "00000.png").write_bytes(b"x")
    with pytest.raises(SipvisError, match=f"output folder {frames} holds the input {frames / '00000.png'}"):
        plan_outputs(["in", "in_png"], [str(tmp_path)], ("png",), [video, frames / "00000.png"])
    plan = plan_outputs(["in"], ["a.mp4", "b.mp4", "r/"], ("video",), [video])
    assert plan.per_input == [{"video": [Path("a.mp4"), Path("b.mp4"), Path("r/in.mp4")]}]


# -- item 6: an unreadable frame keeps its position ------------------------------------------------------------


@pytest.mark.slow
def test_unreadable_frames_keep_their_positions(tiny, tmp_path):
    rng = np.random.default_rng(2)
    gapped, whole = tmp_path / "seq", tmp_path / "readable"
    gapped.mkdir()
    whole.mkdir()
    for i in range(6):
        image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        if i in (2, 5):  # one inside, one at the end
            (gapped / f"f{i}.png").write_bytes(b"not an image")
            continue
        cv2.imwrite(str(gapped / f"f{i}.png"), image)
        cv2.imwrite(str(whole / f"f{i}.png"), image)
    result = track(gapped, "--weights", tiny, "-o", tmp_path / "res", "--format", "json,png,mots")
    assert result.returncode == 0, result.stderr
    entries = json.loads((tmp_path / "res" / "seq.json").read_text())
    assert all(len(e["segmentations"]) == 6 and e["segmentations"][2] is None and e["segmentations"][5] is None
               for e in entries)
    for i in (2, 5):
        assert f"warning: {gapped / f'f{i}.png'}: not a readable image; frame {i} skipped" in result.stderr
    # the readable frames alone give the same masks, tracks and scores at their true positions
    assert track(whole, "--weights", tiny, "-o", tmp_path / "ref.json").returncode == 0
    expected = json.loads((tmp_path / "ref.json").read_text())
    assert [{**e, "segmentations": [e["segmentations"][p] for p in (0, 1, 3, 4)]} for e in entries] == expected
    assert mots_frames(tmp_path / "res" / "seq.txt") == {0, 1, 3, 4}
    assert sorted(p.name for p in (tmp_path / "res" / "seq_png").iterdir()) == [
        "00000.png", "00001.png", "00003.png", "00004.png"]


# -- item 1: a failing output neither stops the others nor destroys what was at its path ---------------------


class _Sink:
    def __init__(self, fail_write_at: int | None = None, fail_close: str | None = None) -> None:
        self.frames: list[int] = []
        self.fail_write_at, self.fail_close = fail_write_at, fail_close
        self.closed = self.aborted = False

    def write(self, frame, instances) -> None:
        if instances.index == self.fail_write_at:
            raise SipvisError(f"cannot write sink at frame {instances.index}")
        self.frames.append(instances.index)

    def close(self) -> None:
        self.closed = True
        if self.fail_close:
            raise SipvisError(self.fail_close)

    def abort(self) -> None:
        self.aborted = True


def test_close_all_closes_every_sink_raises_the_first_error_and_warns_the_rest():
    from sipvis.io import MediaWarning
    from sipvis.io.sinks import close_all

    sinks = [_Sink(fail_close="first"), _Sink(), _Sink(fail_close="second"), _Sink(fail_close="first")]
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SipvisError, match="^first$"):
        warnings.simplefilter("always")
        close_all(sinks)
    assert all(s.closed for s in sinks)
    assert [str(w.message) for w in caught if issubclass(w.category, MediaWarning)] == ["second"]


@pytest.fixture(scope="module")
def segmenter(tiny):
    from sipvis.engine.inference import Segmenter

    return Segmenter.from_checkpoint(str(tiny), device="cpu")


def _frames_folder(folder: Path, count: int = 5) -> Path:
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:05d}.png"), np.full((48, 64, 3), 30 * i, np.uint8))
    return folder


def test_a_failing_sink_stops_the_run_and_every_other_sink_is_finalised(segmenter, tmp_path):
    from sipvis.engine.pipeline import track_source
    from sipvis.io.inputs import open_source
    from sipvis.io.sinks import ResultsJson

    source = open_source(_frames_folder(tmp_path / "seq"), threaded=False)
    good, failing, closing = _Sink(), _Sink(fail_write_at=3), _Sink(fail_close="cannot close")
    with pytest.warns(UserWarning, match="cannot close"), \
            pytest.raises(SipvisError, match="cannot write sink at frame 3"):  # the first error decides
        track_source(source, segmenter, [good, ResultsJson(tmp_path / "out.json").video(1), failing, closing])
    assert good.frames == [0, 1, 2, 3] and good.closed and closing.closed and not good.aborted
    assert json_frames(tmp_path / "out.json") == 4


def test_a_run_that_fails_before_any_frame_leaves_existing_outputs_alone(segmenter, tmp_path):
    from sipvis.engine.pipeline import track_source
    from sipvis.io.formats import MotsTxtSink
    from sipvis.io.inputs import open_source
    from sipvis.io.sinks import ResultsJson

    source = open_source(_frames_folder(tmp_path / "seq"), threaded=False)
    for name in ("out.json", "out.txt"):
        (tmp_path / name).write_bytes(SENTINEL)
    failing = _Sink(fail_write_at=0)
    with pytest.raises(SipvisError, match="cannot write sink at frame 0"):
        track_source(source, segmenter, [ResultsJson(tmp_path / "out.json").video(1),
                                         MotsTxtSink(tmp_path / "out.txt"), failing])
    assert failing.aborted and not failing.closed
    assert (tmp_path / "out.json").read_bytes() == (tmp_path / "out.txt").read_bytes() == SENTINEL
    assert not leftovers(tmp_path)


def _mount(path: Path, options: str) -> None:
    """Mount a tmpfs at `path` (root only: else the test is skipped, naming why)."""
    if os.geteuid() != 0:
        pytest.skip("a tmpfs of a given size (or a read-only one) needs root to mount")
    path.mkdir(exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode})")


@pytest.fixture
def mounts():
    """Mount points to unmount after the test."""
    points: list[Path] = []
    yield points
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _fill(disk: Path, leave: int) -> None:
    """Fill `disk` to `leave` bytes of free space."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    if free > leave:
        (disk / "filler").write_bytes(b"\0" * (free - leave))


@pytest.mark.slow
@pytest.mark.parametrize(("full", "free_kb"), [("video", 16), ("mots", 4), ("png", 8)])
def test_full_disk_fails_one_output_and_finalises_the_others(tiny, clip, tmp_path, mounts, full, free_kb):
    disk = tmp_path / "disk"
    _mount(disk, "size=256k")
    mounts.append(disk)
    here = tmp_path / "here"
    here.mkdir()
    if full == "png":  # a folder output onto the full disk, holding an earlier run's PNGs
        target = disk / "clip_png"
        target.mkdir()
        for i in range(3):
            (target / f"{i:05d}.png").write_bytes(SENTINEL)
        args = ["-o", disk, "--format", "png"]
    else:  # the video or the MOTS text onto the full disk, the other outputs elsewhere
        outs = {"video": here / "out.mp4", "json": here / "out.json", "mots": here / "out.txt"}
        target = outs[full] = disk / outs[full].name
        target.write_bytes(SENTINEL)
        args = [a for path in outs.values() for a in ("-o", path)]
    _fill(disk, free_kb * 1024)
    one_error(track(clip, "--weights", tiny, *args), "cannot write", str(target), "No space left on device")
    if full == "png":  # none of the earlier PNGs replaced
        assert sorted(p.name for p in target.iterdir()) == ["00000.png", "00001.png", "00002.png"]
        assert all(p.read_bytes() == SENTINEL for p in target.iterdir())
    else:
        assert target.read_bytes() == SENTINEL
        processed = json_frames(outs["json"])  # the other outputs hold every frame processed
        assert 0 < processed <= FRAMES
        if full == "mots":
            assert video_frames(outs["video"]) == processed
        else:
            assert mots_frames(outs["mots"]) == set(range(processed))
    assert not leftovers(disk) and not leftovers(here)


@pytest.fixture
def read_only(tmp_path, mounts):
    """A read-only folder holding an earlier run's out.mp4, out.json and out.txt."""
    folder = tmp_path / "ro"
    if os.geteuid() == 0:  # root writes through permissions: a read-only mount instead
        _mount(folder, "size=64k")
        mounts.append(folder)
    else:
        folder.mkdir()
    for name in ("out.mp4", "out.json", "out.txt"):
        (folder / name).write_bytes(SENTINEL)
    if os.geteuid() == 0:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    else:
        folder.chmod(0o555)
    yield folder
    with contextlib.suppress(OSError):
        folder.chmod(0o755)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["video", "json", "mots"])
def test_read_only_folder_fails_one_output_and_keeps_existing_files(tiny, clip, tmp_path, read_only, kind):
    names = {"video": "out.mp4", "json": "out.json", "mots": "out.txt"}
    here = tmp_path / "here"
    here.mkdir()
    for name in names.values():
        (here / name).write_bytes(SENTINEL)
    outs = {k: (read_only if k == kind else here) / name for k, name in names.items()}
    result = track(clip, "--weights", tiny, "--max-frames", 5, *[a for p in outs.values() for a in ("-o", p)])
    one_error(result, "cannot write", str(outs[kind]))
    assert all((read_only / name).read_bytes() == SENTINEL for name in names.values())
    if kind == "json":  # it fails at the end: the others are finalised with every frame
        assert video_frames(outs["video"]) == 5 and mots_frames(outs["mots"]) == set(range(5))
    else:  # it fails on opening, before any frame: no other output replaces an earlier one
        assert all((here / name).read_bytes() == SENTINEL for name in names.values())
    assert not leftovers(here)


def test_live_refuses_to_record_onto_its_input(tiny, clip, tmp_path: Path) -> None:
    """`sipvis live --source clip.mp4 -o clip.mp4` would replace the clip when the recording stops."""
    played = tmp_path / "clip.mp4"
    played.write_bytes(clip.read_bytes())
    before = played.read_bytes()
    r = subprocess.run([sys.executable, "-c", "from sipvis.cli import main; main()", "live", "--source", str(played),
                        "-o", str(played), "--no-window", "--weights", str(tiny)], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    one_error(r, "clip.mp4")
    assert played.read_bytes() == before
