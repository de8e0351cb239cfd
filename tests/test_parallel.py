"""Data parallelism: two (forced) CPU devices train like one, and checkpoints move
between device counts. Losses agree to rtol 1e-5 and parameters to atol 1e-5, not
bitwise: the gradient is summed in a different order when the batch is split."""

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import (
    TINY,
    assert_ends_in_one_error_line,
    assert_one_line_error,
    cli,
    fit_args,
    in_process,
    popen,
    records,
)

from jaxtrain.training.engine.parallel import DataParallel, detect_cluster, initialize_distributed
from jaxtrain.training.rundir import checkpoint

TWO_DEVICES = {"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
               + " --xla_force_host_platform_device_count=2"}


EPOCHS = 3  # of 8 steps: a run can move twice, at epochs 1 and 2


def fit(data_dir, workdir, devices, *extra):
    cli(*fit_args(data_dir, workdir, EPOCHS, "--devices", devices, *extra), env=TWO_DEVICES)


def assert_close_runs(a, b):
    ra, rb = records(a), records(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        for key in ("train_loss", "test_loss", "test_kl"):
            np.testing.assert_allclose(x[key], y[key], rtol=1e-5)
    # Restored here, in a process with one device, whatever they were saved on.
    sa, sb = (checkpoint.restore(w).state for w in (a, b))
    assert int(sa.step) == int(sb.step) == 8 * EPOCHS
    for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory, data_dir):
    """The run on one device, in this test process (which has one: no process to start)."""
    workdir = tmp_path_factory.mktemp("one_device")
    in_process(*fit_args(data_dir, workdir, EPOCHS, "--devices", 1))
    return workdir


@pytest.mark.slow
def test_two_devices_train_like_one_and_checkpoints_move(tmp_path, data_dir, one_device):
    """Epoch 1 on two devices at 3 steps a call (the stacked batches split over the
    devices), epoch 2 on one (in this test process, which has one), epoch 3 on two
    again: every epoch matches one device."""
    fit(data_dir, tmp_path, 2, "--stop-at-epoch", 1, "--steps-per-call", 3)
    in_process("resume", "--workdir", tmp_path, "--devices", 1, "--stop-at-epoch", 2)
    cli("resume", "--workdir", tmp_path, "--devices", 2, env=TWO_DEVICES)
    assert_close_runs(one_device, tmp_path)


@pytest.mark.slow
def test_transformer_dropout_does_not_depend_on_the_split(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    args = ["--model", "transformer", "--dataset", "text", "--data-file", text, "--layers", 1,
            "--d-model", 32, "--heads", 2, "--context", 32, "--batch-size", 8, "--steps", 6,
            "--warmup-steps", 2, "--eval-every", 3]
    # 1 device (in this test process) against 2 devices that each accumulate 2
    # micro-batches of 2 rows
    in_process("fit", *args, "--workdir", tmp_path / "1", "--devices", 1)
    cli("fit", *args, "--workdir", tmp_path / "2x2", "--devices", 2, "--accumulate", 2,
        env=TWO_DEVICES)
    a, b = records(tmp_path / "1"), records(tmp_path / "2x2")
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        np.testing.assert_allclose(x["train_loss"], y["train_loss"], rtol=1e-5)
        np.testing.assert_allclose(x["test_loss"], y["test_loss"], rtol=1e-5)


@pytest.mark.slow
def test_device_count_and_batch_errors(tmp_path, data_dir):
    with pytest.raises(ValueError, match="JAX sees 1 cpu device"):
        DataParallel(2)  # this test process has one CPU device
    proc = cli("fit", "--data-dir", data_dir, "--workdir", tmp_path, *TINY, "--batch-size", 6,
               "--devices", 4, check=False, env=TWO_DEVICES)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--devices 4: JAX sees 2 cpu devices; pass --devices 1 to 2" in proc.stderr
    proc = cli("fit", "--data-dir", data_dir, "--workdir", tmp_path, *TINY, "--batch-size", 7,
               "--devices", 2, check=False, env=TWO_DEVICES)
    assert proc.returncode == 2 and "pass a multiple of 2" in proc.stderr
    proc = cli("fit", "--data-dir", data_dir, "--workdir", tmp_path, *TINY, "--batch-size", 6,
               "--accumulate", 2, "--devices", 2, check=False, env=TWO_DEVICES)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "pass a multiple of 4 (--accumulate times the devices)" in proc.stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_distributed_start_needs_all_three_variables(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert initialize_distributed() is False
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES, JAX_PROCESS_ID not set"):
        initialize_distributed()


# What `srun -n 2` on one node sets in each task (those JAX reads and a few around them).
def slurm_task(task: int, job_id: int, tasks: int = 2) -> dict:
    return {"SLURM_JOB_ID": str(job_id), "SLURM_JOB_NODELIST": "localhost",
            "SLURM_STEP_NODELIST": "localhost", "SLURM_NNODES": "1",
            "SLURM_STEP_NUM_NODES": "1", "SLURM_NTASKS": str(tasks),
            "SLURM_STEP_NUM_TASKS": str(tasks), "SLURM_PROCID": str(task),
            "SLURM_LOCALID": str(task), "SLURM_NODEID": "0"}


def free_slurm_job_id() -> int:
    """A job id whose coordinator port (JAX: 61440 + id % 4096) is free now."""
    rng = random.Random()
    while True:
        port = rng.randrange(61440, 65536)
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
        return 4096 * rng.randrange(1, 1000) + port - 61440


def run_processes(*args, envs, cwds=(None, None)):
    """`jaxtrain ARGS` as processes of one run, one per env; their (returncode, stdout,
    stderr)."""
    procs = [popen(*args, env=env, cwd=cwd) for env, cwd in zip(envs, cwds, strict=True)]
    return [(p.returncode, *out) for p, out in
            zip(procs, [p.communicate(timeout=300) for p in procs])]


def run_tasks(*args, job_id, cwds=(None, None)):
    """`jaxtrain ARGS` as the two tasks of one Slurm step."""
    return run_processes(*args, envs=[slurm_task(i, job_id) for i in (0, 1)], cwds=cwds)


def assert_one_run(results):
    """Every process succeeded; process 0 alone printed the evaluation."""
    (rc0, out0, err0), (rc1, out1, err1) = results
    assert rc0 == 0 and rc1 == 0, err0 + err1
    assert out0.count("test loss") == 1 and "test loss" not in out1


@pytest.mark.slow
def test_two_processes_train_like_one_device(tmp_path, data_dir, one_device):
    """Epoch 1: two processes of one CPU device each, joined by jax.distributed from the
    JAX_* variables (as two hosts would be), 3 steps a call (each process puts its rows
    of the stacked batches). Epoch 2: two processes that carry a Slurm task's environment
    and no JAX_* variable (as `srun -n 2` starts them) join through JAX's Slurm detection
    and resume it (as a requeued job would). Epoch 3: one process (this test's) resumes
    it alone."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    envs = [{"JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
             "JAX_PROCESS_ID": str(i)} for i in (0, 1)]
    assert_one_run(run_processes("fit", "--data-dir", data_dir, "--workdir", tmp_path,
                                 "--epochs", EPOCHS, *TINY, "--stop-at-epoch", 1,
                                 "--steps-per-call", 3, envs=envs))
    results = run_tasks("resume", "--workdir", tmp_path, "--stop-at-epoch", 2,
                        job_id=free_slurm_job_id())
    assert_one_run(results)
    assert "2 processes (slurm), 2 devices, cpu float32" in results[0][2]
    in_process("resume", "--workdir", tmp_path)  # in this test process
    assert_close_runs(one_device, tmp_path)


@pytest.mark.slow
def test_sigterm_stops_every_slurm_task_at_one_step_and_saves(tmp_path, data_dir):
    """Slurm's preemption or time limit: SIGTERM to every task. JAX's preemption notifier
    holds SIGTERM in a multi-process run; all processes stop after the same call, save
    it and exit as one process does (143, the line that says how to resume)."""
    job_id = free_slurm_job_id()
    procs = [popen("fit", "--data-dir", data_dir, "--workdir", tmp_path, "--epochs", 400, *TINY,
                   env=slurm_task(i, job_id)) for i in (0, 1)]
    deadline = time.monotonic() + 120
    while not (tmp_path / "metrics.jsonl").exists() and time.monotonic() < deadline \
            and all(p.poll() is None for p in procs):
        time.sleep(0.2)  # the first evaluation (step 8) is written: training is under way
    for p in procs:
        p.send_signal(signal.SIGTERM)
    ends = [p.communicate(timeout=120)[1].strip().splitlines()[-1] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], ends
    saved = re.fullmatch(r"SIGTERM: saved step (\d+)/3200 \(epoch [\d.]+/400\) in \S+; "
                         r"continue with: jaxtrain resume --workdir \S+", ends[0])
    assert saved and ends[1] == ends[0], ends
    assert int(checkpoint.restore(tmp_path).state.step) == int(saved[1]) > 8


@pytest.mark.slow
def test_a_workdir_one_process_cannot_see_stops_every_process(tmp_path, data_dir):
    """The same relative --workdir from two folders: process 1 does not see what process 0
    wrote, as if the workdir were on a disk of its own; both stop with one line."""
    for name in "ab":
        (tmp_path / name).mkdir()
    results = run_tasks("fit", "--data-dir", data_dir, "--workdir", "run", *TINY,
                        job_id=free_slurm_job_id(), cwds=(tmp_path / "a", tmp_path / "b"))
    for rc, out, err in results:
        proc = subprocess.CompletedProcess([], rc, out, err)
        assert_ends_in_one_error_line(
            proc, "process 1 cannot see run/config.toml that process 0 wrote: the workdir "
                  "must be on storage every process sees (a shared filesystem)")
        assert rc == 2


CLUSTER_ENV = ("JAX_", "SLURM_", "OMPI_", "JOB_COMPLETION_INDEX", "KUBERNETES_SERVICE_HOST",
               "JAXTRAIN_CLUSTER")


@pytest.fixture
def no_cluster(monkeypatch):
    for name in list(os.environ):
        if name.startswith(CLUSTER_ENV):
            monkeypatch.delenv(name)
    return monkeypatch


def test_cluster_detection(no_cluster):
    assert detect_cluster() is None
    for name, value in slurm_task(0, 7, tasks=1).items():  # salloc, or `srun -n 1`
        no_cluster.setenv(name, value)
    assert detect_cluster() is None
    no_cluster.setenv("SLURM_NTASKS", "2")
    assert detect_cluster() == "slurm"
    for name, value in (("JAX_COORDINATOR_ADDRESS", "h:1"), ("JAX_NUM_PROCESSES", "2"),
                        ("JAX_PROCESS_ID", "1")):
        no_cluster.setenv(name, value)
    assert detect_cluster() == "JAX_* variables"  # explicit wins
    # Kubeflow Trainer's JAX runtime: a JobSet's pod, with the three variables set
    no_cluster.setenv("JOB_COMPLETION_INDEX", "1")
    no_cluster.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert detect_cluster() == "JAX_* variables"
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        no_cluster.delenv(name)
    no_cluster.setenv("JAXTRAIN_CLUSTER", "none")  # each task its own run (a sweep)
    assert detect_cluster() is None


def test_half_described_clusters_are_one_line(no_cluster):
    no_cluster.setenv("JAX_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="JAX_COORDINATOR_ADDRESS, JAX_PROCESS_ID not set$"):
        detect_cluster()
    no_cluster.delenv("JAX_NUM_PROCESSES")
    for name, value in slurm_task(0, 7).items():
        no_cluster.setenv(name, value)
    no_cluster.delenv("SLURM_PROCID")
    no_cluster.delenv("SLURM_STEP_NODELIST")  # as in an sbatch script, outside srun
    with pytest.raises(ValueError, match="^SLURM_NTASKS=2 but SLURM_STEP_NODELIST, "
                                         "SLURM_PROCID not set: start every task with srun"):
        detect_cluster()
    no_cluster.setenv("SLURM_NTASKS", "two")
    with pytest.raises(ValueError, match="^SLURM_NTASKS='two' is not a whole number$"):
        detect_cluster()
    for name in slurm_task(0, 7):
        no_cluster.delenv(name, raising=False)
    no_cluster.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert detect_cluster() is None  # any pod: one process
    no_cluster.setenv("JOB_COMPLETION_INDEX", "0")  # an Indexed Job, or a JobSet's
    no_cluster.setitem(sys.modules, "kubernetes", None)  # not installed
    with pytest.raises(ValueError, match="the `kubernetes` package, which is not installed"):
        detect_cluster()


@pytest.mark.slow
def test_a_half_described_slurm_step_is_one_line(tmp_path, data_dir):
    env = {**slurm_task(1, 7), "SLURM_PROCID": ""}
    proc = cli(*fit_args(data_dir, tmp_path), check=False, env=env)
    assert_one_line_error(proc, "SLURM_NTASKS=2 but SLURM_PROCID not set")
