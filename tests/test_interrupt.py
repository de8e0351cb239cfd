"""Ctrl-C (SIGINT) at any moment of a command: one line, exit 130, no traceback, no
"Exception ignored", no half-written checkpoint; the line says how to resume when a
checkpoint exists (training/host/signals.py)."""

import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import fit_args, popen

from jaxtrain.training.rundir import checkpoint


def assert_stopped(proc, err, *fragments):
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("SIGINT: "), err
    for fragment in fragments:
        assert fragment in last, last


def no_tmp_folders(workdir):
    ckpt = workdir / "checkpoints"
    return not ckpt.is_dir() or not [p for p in ckpt.iterdir() if "tmp" in p.name]


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path, data_dir):
    """While JAX and torch import (1.5 s) and while the run is being built (4 s): three
    processes at once, so the test takes the longest wait, not their sum."""
    runs = {delay: (tmp_path / f"run{delay}", ) for delay in (1.5, 4.0)}
    procs = {delay: popen(*fit_args(data_dir, w, 50)) for delay, (w,) in runs.items()}
    judge = popen("judge", "--data-dir", data_dir, "--no-download", "--retrain")
    start = time.monotonic()
    for delay, proc in sorted({**procs, 2.5: judge}.items()):
        time.sleep(max(0.0, start + delay - time.monotonic()))
        proc.send_signal(signal.SIGINT)
    for delay, proc in procs.items():
        _, err = proc.communicate(timeout=60)
        assert_stopped(proc, err)
        if "checkpoint is step" not in err and "jaxtrain resume --workdir" not in err:
            # stopped before the loop's first save
            assert "nothing was saved" in err or err.strip() == "SIGINT: stopped", err
        assert no_tmp_folders(runs[delay][0])
    _, err = judge.communicate(timeout=60)
    assert_stopped(judge, err)


@pytest.mark.slow
def test_ctrl_c_twice_mid_run_and_mid_save_leaves_a_resumable_run(tmp_path, data_dir,
                                                                 jaxtrain):
    workdir = tmp_path / "run"
    proc = popen(*fit_args(data_dir, workdir, 50))
    for line in iter(proc.stderr.readline, ""):  # until the loop runs (or the output ends)
        if line.startswith("training vae"):
            break
    else:
        pytest.fail(f"fit ended before training (exit {proc.wait()})")
    proc.send_signal(signal.SIGINT)  # mid-step: the loop saves at its next call...
    # (A tiny save takes milliseconds, so the second signal may come after it: the
    # guard's wait for a save in flight is tested alone below.)
    ckpt, deadline = workdir / "checkpoints", time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:  # ...and, mid-save:
        if ckpt.is_dir() and any("tmp" in p.name for p in ckpt.iterdir()):
            break
        time.sleep(0.001)
    proc.send_signal(signal.SIGINT)  # a second Ctrl-C: out at once, the save finished
    _, err = proc.communicate(timeout=60)
    assert_stopped(proc, err, f"jaxtrain resume --workdir {workdir}")
    assert no_tmp_folders(workdir)
    step = checkpoint.restore(workdir).step
    assert f"step {step}" in err.strip().splitlines()[-1]
    jaxtrain("resume", "--workdir", workdir, "--epochs", 1 + step // 8, check=True)


# A real Orbax save in flight (32 MB, written after save() returns) when SIGINT comes.
MID_SAVE = """
import os, signal, sys, time
from pathlib import Path
import numpy as np
import orbax.checkpoint as ocp
from jaxtrain.training.host.signals import GUARD

GUARD.install()
workdir = Path(sys.argv[1])
manager = ocp.CheckpointManager(workdir / "checkpoints")
GUARD.workdir, GUARD.manager = workdir, manager
manager.save(1, args=ocp.args.StandardSave({"w": np.ones((8, 1024, 1024), np.float32)}))
print("saving" if manager.is_saving_in_progress() else "saved", flush=True)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(60)  # the guard's thread ends the process once the save is done
"""


def test_a_signal_during_a_save_waits_for_it(tmp_path):
    proc = subprocess.run([sys.executable, "-c", MID_SAVE, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.strip() == "saving"  # the signal came while Orbax was writing
    assert_stopped(proc, proc.stderr, "the last checkpoint is step 1")
    assert no_tmp_folders(tmp_path)
    restored = ocp.CheckpointManager(tmp_path / "checkpoints").restore(1)
    assert restored["w"].shape == (8, 1024, 1024) and np.all(restored["w"] == 1)
