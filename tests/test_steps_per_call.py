"""--steps-per-call S: S optimizer steps in one lax.scan call are the S single steps (on a
CPU, bitwise), and the loop's calls start at the same steps wherever a run resumes."""

import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from conftest import DEFAULT_XLA
from test_accumulate import CASES

from jaxtrain.training.engine.calls import choose_steps_per_call, steps_for
from jaxtrain.training.engine.loop import Loop, per_step
from jaxtrain.training.engine.run import Run
from jaxtrain.training.settings.config import RunConfig, TrainConfig

S = 3


@pytest.mark.slow
def test_one_call_of_s_steps_is_s_single_steps_bitwise():
    """The text Transformer with dropout and the VAE, compiled as users get it
    (conftest.DEFAULT_XLA): this file run as a script. (tests/test_cli.py runs 3 steps a
    call through the loop, a stop and a resume, with the tests' compile.)"""
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True,
                          env={**os.environ, **DEFAULT_XLA}, timeout=300)
    assert proc.returncode == 0, proc.stderr


def s_steps_are_single_steps(case):
    make, batches = CASES[case]
    model, model_config, data = make()
    config = RunConfig(model, model_config, data,
                       TrainConfig(epochs=None, steps=100, batch_size=8, warmup_steps=2,
                                   lr=3e-3, steps_per_call=S))
    run = Run(config, None)
    singles, single_metrics = run.init_state(), []
    for batch in batches(8):  # S batches
        singles, metrics = run.train_step(singles, batch)
        single_metrics.append(metrics)
    stacked = jax.tree.map(lambda *x: np.stack(x), *batches(8))
    called, call_metrics = run.train_steps(run.init_state(), stacked)
    assert int(called.step) == S
    for x, y in zip(jax.tree.leaves(singles), jax.tree.leaves(called), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    host = per_step([jax.device_get(call_metrics)])
    assert len(host) == S
    for a, b in zip(jax.device_get(single_metrics), host, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == b[key], key


def calls(start, end, every, s):
    """The lengths of the loop's calls from `start` to `end` (training/engine/loop.py)."""
    run = types.SimpleNamespace(steps_per_call=s, eval_every=every)
    loop = Loop(run=run, workdir=None, state=None, source=None, start=start, end=end,
                position={}, step=start, period_start=start)
    out = []
    while loop.step < end:
        n = loop.call_steps()
        out.append(n)
        loop.step += n
        if loop.step == loop.period_end:
            loop.period_start = loop.step
    return out


def test_calls_stop_at_evaluations_and_start_at_the_same_steps_after_a_resume():
    # 8 steps between evaluations, S = 3: 3 + 3, then 2 single steps before each one.
    assert calls(0, 20, 8, 3) == [3, 3, 1, 1, 3, 3, 1, 1, 3, 1]
    # Resumed at a call boundary (a SIGTERM) or an evaluation: the same calls from there.
    assert calls(3, 20, 8, 3) == [3, 1, 1, 3, 3, 1, 1, 3, 1]
    assert calls(8, 20, 8, 3) == [3, 3, 1, 1, 3, 1]
    assert calls(0, 8, 8, 1) == [1] * 8


def vae_run(**train) -> Run:
    """A run of the tiny VAE of tests/test_accumulate.py with these TrainConfig fields."""
    model, model_config, data = CASES["vae"][0]()
    return Run(RunConfig(model, model_config, data,
                         TrainConfig(epochs=None, steps=100, warmup_steps=2, **train)), None)


def test_more_steps_per_call_than_between_evaluations_is_an_error():
    with pytest.raises(ValueError, match="--steps-per-call 5 is more than the 4 steps"):
        vae_run(eval_every=4, steps_per_call=5)


def test_steps_per_call_from_the_step_time():
    """Calls of about 20 ms, 1 to 32 steps, never past the next evaluation."""
    assert steps_for(0.001, 100) == 20
    assert steps_for(0.005, 100) == 4
    assert steps_for(0.03, 100) == 1  # a step longer than a call
    assert steps_for(0.0001, 100) == 32
    assert steps_for(0.001, 8) == 8


def test_choosing_steps_per_call_leaves_the_state_untouched():
    run = vae_run(eval_every=10, steps_per_call=0)
    assert run.steps_per_call == 1 and run.config.train.steps_per_call == 0
    state = run.init_state()
    before = jax.device_get(state)
    seconds = choose_steps_per_call(run, state, CASES["vae"][1](8)[0])
    assert seconds > 0
    assert run.steps_per_call == steps_for(seconds, 10)
    assert run.config.train.steps_per_call == run.steps_per_call  # saved with the run
    assert (run.train_steps is None) == (run.steps_per_call == 1)
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(x, np.asarray(y))


if __name__ == "__main__":
    for case in ("text", "vae"):
        s_steps_are_single_steps(case)
