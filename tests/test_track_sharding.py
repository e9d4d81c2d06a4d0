"""`sipvis track` over several inputs under `torchrun --nproc_per_node 2` (CPU, gloo): every rank tracks
its share of the inputs, and the outputs are byte for byte those of one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sipvis.engine.bench import generate_clip
from sipvis.engine.distributed import DistInfo
from sipvis.engine.track_run import rank_part, shard_of

TRACK = ["-c", "from sipvis.cli import main; main()", "track"]


def test_inputs_are_shared_round_robin_by_rank():
    ranks = [[p for p in range(7) if shard_of(p, DistInfo(r, 3))] for r in range(3)]
    assert ranks == [[0, 3, 6], [1, 4], [2, 5]]
    assert all(shard_of(p, DistInfo()) for p in range(7))  # alone: every input
    assert rank_part(Path("out/r.json"), DistInfo()) == Path("out/r.json")
    assert rank_part(Path("out/r.json"), DistInfo(1, 2)) == Path("out/.r.json.rank1")


@pytest.mark.slow
def test_two_ranks_write_what_one_process_writes(tmp_path):
    clips = [str(generate_clip(tmp_path / f"clip{i}.mp4", 160, 96, 3, seed=i)) for i in range(3)]
    args = [*clips, "--weights", "demo", "--device", "cpu", "--quiet", "--format", "json,mots"]
    alone, ranked = tmp_path / "alone", tmp_path / "ranked"
    for out, launcher in ((alone, []), (ranked, ["-m", "torch.distributed.run", "--standalone",
                                                 "--nproc_per_node", "2"])):
        for target in (out / "all.json", out):  # one shared results JSON; a folder of per-input outputs
            cmd = [sys.executable, *launcher, *(TRACK if not launcher else ["-m", "sipvis.cli", "track"]), *args,
                   "-o", str(target)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(p.relative_to(alone) for p in alone.rglob("*") if p.is_file())
    assert len(files) == 1 + 2 * 3 and files == sorted(p.relative_to(ranked) for p in ranked.rglob("*") if p.is_file())
    assert {e["video_id"] for e in json.loads((alone / "all.json").read_text())} == {1, 2, 3}  # not empty
    for name in files:  # the parts of the shared JSON are gone; every file is identical
        assert (alone / name).read_bytes() == (ranked / name).read_bytes(), name
