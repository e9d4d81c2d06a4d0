"""The intra-op thread rule of model commands (`sipvis.engine.threads`) and `--threads`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from sipvis.cli import cli
from sipvis.engine.threads import (choose_threads, fit_threads_to_model, passive_waits, pools_spin,
                                   set_inference_threads)
from sipvis.errors import SipvisError
from sipvis.model.config import SipMaskConfig


@pytest.mark.parametrize(("cores", "default", "expected"), [(2, 2, 2), (1, 1, 1), (8, 8, 8), (16, 4, 4)])
def test_the_network_gets_every_available_core(cores, default, expected):
    assert choose_threads(None, cores=cores, default=default, environ={}) == expected


def test_explicit_choices_win():
    assert choose_threads(3, cores=2, default=2, environ={"OMP_NUM_THREADS": "1"}) == 3  # --threads
    assert choose_threads(0, cores=8, default=8, environ={"OMP_NUM_THREADS": "2"}) is None  # torch keeps it
    with pytest.raises(SipvisError, match="--threads -2"):
        choose_threads(-2)


def test_torchrun_processes_share_the_cores():
    assert choose_threads(None, cores=16, default=16, environ={"LOCAL_WORLD_SIZE": "4"}) == 4
    assert choose_threads(None, cores=2, default=2, environ={"LOCAL_WORLD_SIZE": "2"}) == 1
    assert choose_threads(None, cores=2, default=2, environ={"LOCAL_WORLD_SIZE": "4"}) == 1


def test_pools_wait_passively_unless_the_user_chose():
    environ = {}
    passive_waits(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"} and not pools_spin(environ)
    environ = {"OMP_WAIT_POLICY": "active"}
    passive_waits(environ)
    assert environ == {"OMP_WAIT_POLICY": "active"} and pools_spin(environ)


def test_the_cli_sets_the_wait_policy_before_torch_loads():
    """OpenMP reads OMP_WAIT_POLICY once, when torch is imported: the console script must set it first."""
    code = ("import os, sys\n"
            "sys.argv = ['sipvis', 'track', '--help']\n"
            "from sipvis.cli import main\n"
            "assert 'torch' not in sys.modules\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('policy', os.environ.get('OMP_WAIT_POLICY'))\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "policy PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "policy ACTIVE"


class _Net:
    def __init__(self, size, runtime=None):
        self.cfg = SipMaskConfig(max_size=size)
        if runtime:
            self.runtime = runtime


@pytest.mark.parametrize(("size", "runtime", "device", "environ", "requested", "expected"), [
    ((256, 144), None, "cpu", {}, None, 1),                       # the demo model, eager: one thread
    ((256, 144), "torchscript", "cpu", {}, None, 1),              # torch's kernels too
    ((640, 360), None, "cpu", {}, None, 2),                       # the R50: every core
    ((256, 144), "onnxruntime", "cpu", {}, None, 2),              # an exported runtime: every core
    ((256, 144), None, "cuda", {}, None, 2),                      # the network is on the GPU
    ((256, 144), None, "cpu", {}, 2, 2),                          # --threads 2 wins
    ((256, 144), None, "cpu", {"OMP_NUM_THREADS": "2"}, None, 2),  # so does OMP_NUM_THREADS
])
def test_small_eager_networks_run_on_one_thread(size, runtime, device, environ, requested, expected):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert fit_threads_to_model(_Net(size, runtime), device, requested, environ) == expected
    finally:
        torch.set_num_threads(before)


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
