"""The one atomic-write helper every writer uses."""

from __future__ import annotations

import json

import pytest

from sipvis.errors import SipvisError
from sipvis.io.files import atomic_write, write_json_atomic


def test_atomic_write_replaces_the_file_only_when_the_block_succeeds(tmp_path):
    out = tmp_path / "out.json"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(out, "w", encoding="utf-8") as f:
            f.write("half a new fi")
            raise RuntimeError("writer failed")
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary left behind
    write_json_atomic(out, {"a": 1})
    assert json.loads(out.read_text()) == {"a": 1}


def test_concurrent_writers_use_their_own_temporary_files(tmp_path):
    out = tmp_path / "out.txt"
    with atomic_write(out, "w") as a, atomic_write(out, "w") as b:
        assert a.name != b.name
        a.write("first")
        b.write("second")
    assert out.read_text() in ("first", "second")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_folder_at_the_target_path_is_one_clear_error(tmp_path):
    (tmp_path / "out.json").mkdir()
    with pytest.raises(SipvisError, match="it is a folder"):
        write_json_atomic(tmp_path / "out.json", [])


def test_close_all_closes_every_sink_and_raises_the_first_error():
    from sipvis.io.sinks import close_all

    closed = []

    class Sink:
        def __init__(self, name, fail=False):
            self.name, self.fail = name, fail

        def write(self, frame, instances):
            pass

        def close(self):
            closed.append(self.name)
            if self.fail:
                raise SipvisError(f"cannot write {self.name}: No space left on device")

    with pytest.raises(SipvisError, match="cannot write json"):
        close_all([Sink("json", fail=True), Sink("video"), Sink("mots", fail=True)])
    assert closed == ["json", "video", "mots"]  # the video is finalised although the JSON failed first
