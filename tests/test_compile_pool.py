"""Compiling several networks in worker processes gives what compiling them here gives, and fails per job."""

import numpy as np
import pytest
import torch
from torch import nn

from labnas.nn import LAB, SteSign
from labnas.nn.conv import BinaryConv2d
from labnas.timing import exclusive_timing, shared_training
from labnas.tvm import TARGETS, compile_model
from labnas.tvm.compile_pool import CompileFailed, can_compile_in_parallel, compile_many

HOST = TARGETS["host"]


def _nets():
    torch.manual_seed(0)
    return [
        (nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).eval(), (1, 3, 12, 12)),
        (nn.Sequential(BinaryConv2d(16, 8, 3, 1, binarizer=LAB(16, 3), pad_value=1)).eval(), (1, 16, 6, 6)),
        (nn.Sequential(BinaryConv2d(16, 16, 3, 1, binarizer=SteSign(), pad_value=1)).eval(), (1, 16, 5, 5)),
    ]


class Refused(nn.Module):
    """A model torch.export cannot trace (data-dependent Python control flow)."""

    def forward(self, x):
        if x.sum() > 0:
            return x + 1
        return x - 1


def test_workers_compile_what_compiling_here_compiles():
    jobs = _nets()
    outcomes = compile_many(jobs, HOST, workers=2, compile_lock=shared_training, timing_lock=exclusive_timing)
    assert [o.error for o in outcomes] == [None, None, None]
    for (model, shape), outcome in zip(jobs, outcomes):
        x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
        here = compile_model(model, shape, HOST).run_local(x)
        assert outcome.compiled.input_shape == shape and outcome.seconds > 0
        assert np.array_equal(outcome.compiled.run_local(x), here)  # the same machine code, in job order


def test_a_failed_job_is_returned_or_raised():
    jobs = [_nets()[0], (Refused().eval(), (1, 3, 4, 4))]
    outcomes = compile_many(jobs, HOST, workers=2, keep_going=True)
    assert outcomes[0].compiled is not None and outcomes[0].error is None
    assert outcomes[1].compiled is None and outcomes[1].error
    expected = CompileFailed if can_compile_in_parallel(HOST, 2) else Exception
    with pytest.raises(expected):
        compile_many(jobs, HOST, workers=2)


def test_targets_this_machine_cannot_run_compile_here():
    assert not can_compile_in_parallel(TARGETS["rpi4"])
    assert not can_compile_in_parallel(HOST, workers=1)
