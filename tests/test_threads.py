"""The intra-op thread rule of model commands (`sipvis.engine.threads`) and `--threads`."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from sipvis.cli import cli
from sipvis.engine.threads import choose_threads, set_inference_threads
from sipvis.errors import SipvisError


@pytest.mark.parametrize(("cores", "default", "expected"), [(2, 2, 1), (1, 1, 1), (8, 8, 7), (16, 4, 4)])
def test_one_core_is_left_to_the_pipeline_threads(cores, default, expected):
    assert choose_threads(None, cores=cores, default=default, environ={}) == expected


def test_explicit_choices_win():
    assert choose_threads(3, cores=2, default=2, environ={"OMP_NUM_THREADS": "1"}) == 3  # --threads
    assert choose_threads(0, cores=8, default=8, environ={"OMP_NUM_THREADS": "2"}) is None  # torch keeps it
    with pytest.raises(SipvisError, match="--threads -2"):
        choose_threads(-2)


def test_torchrun_processes_share_the_cores():
    assert choose_threads(None, cores=16, default=16, environ={"LOCAL_WORLD_SIZE": "4"}) == 3
    assert choose_threads(None, cores=2, default=2, environ={"LOCAL_WORLD_SIZE": "2"}) == 1


def test_set_inference_threads_sets_torch_pool():
    before = torch.get_num_threads()
    try:
        assert set_inference_threads(1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("command", [["track", "x.mp4", "-o", "x.json"], ["bench"]])
def test_threads_option_sets_the_pool_before_the_model_is_built(command, monkeypatch):
    from sipvis.engine.inference import Segmenter

    seen = []

    def stop(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise SipvisError("stopped before loading")

    monkeypatch.setattr(Segmenter, "from_checkpoint", stop)
    monkeypatch.setattr(Segmenter, "__init__", stop)  # bench without cached default weights: a random model
    monkeypatch.setattr("sipvis.io.inputs.expand_inputs", lambda specs: specs)
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(cli, [*command, "--threads", "3", "--device", "cpu"])
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 1 and "stopped before loading" in result.stderr
    assert seen == [3]


def test_negative_threads_is_one_line():
    result = CliRunner().invoke(cli, ["track", "x.mp4", "-o", "x.json", "--threads", "-1"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.stderr.strip().splitlines()[-1] == "Error: Invalid value for '--threads': -1 is not in the range x>=0."
