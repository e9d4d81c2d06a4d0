"""`sipvis demo`: offline clip + tracking, outputs that decode."""

from __future__ import annotations

import json
import subprocess
import sys

import av

from models import tiny_checkpoint


def test_demo_writes_playable_video_and_json(tmp_path):
    weights = tiny_checkpoint(tmp_path)
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-c", "from sipvis.cli import main; main()", "demo", "-o", str(out),
                             "--weights", str(weights), "--frames", "6", "--quiet"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"annotated video: {out / 'tracked.mp4'}" in result.stdout
    with av.open(str(out / "tracked.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6
    entries = json.loads((out / "tracked.json").read_text())
    assert all(len(e["segmentations"]) == 6 for e in entries)
