"""The daily tool through the real CLI: TensorBoard, curves, the runs table, profiling,
and the guards (non-finite loss, one writer per workdir, early stopping, bad workdirs)."""

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import (
    assert_ends_in_one_error_line,
    assert_one_line_error,
    cli,
    fit_args,
    in_process,
    popen,
    records,
)
from events import read_events
from PIL import Image

from jaxtrain.training.commands.prepare import with_spec
from jaxtrain.training.rundir import checkpoint
from jaxtrain.training.settings.files import read_file, resolve
from jaxtrain.training.sources.registry import datasets


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, data_dir):
    """A 2-epoch run whose last checkpoint was lost after TensorBoard had logged past it
    (as when a run is killed), then resumed: the curves must not hold steps twice."""
    workdir = tmp_path_factory.mktemp("resumed") / "run"
    in_process(*fit_args(data_dir, workdir, 3))
    shutil.rmtree(workdir / "checkpoints" / "24")
    shutil.rmtree(workdir / "checkpoints" / "16")
    in_process("resume", "--workdir", workdir)
    return workdir


@pytest.mark.slow
def test_tensorboard_events_read_back_without_duplicates_after_resume(resumed):
    events = read_events(resumed / "tb")
    seen = [(kind, tag, step) for kind, tag, step, _ in events]
    assert len(seen) == len(set(seen)), "an event is shown twice"
    train = sorted(step for kind, tag, step, _ in events if tag == "train/train_loss")
    assert train == [4, 8, 12, 16, 20, 24]  # every log_every steps, no gap
    for tag in ("test/test_loss", "test/test_recon", "test/test_kl", "speed/samples_per_s"):
        assert sorted(s for _, t, s, _ in events if t == tag) == [8, 16, 24], tag
    images = {(t, s) for kind, t, s, _ in events if kind == "image"}
    assert images == {(name, s) for name in ("samples", "recon") for s in (8, 16, 24)}
    png = next(v for kind, t, s, v in events if kind == "image" and t == "samples")
    assert png[:4] == b"\x89PNG"
    config, = [v for kind, t, s, v in events if kind == "text" and t == "config"]
    assert 'model = "vae"' in config and "[train]" in config
    # The run's config.toml gives its config back (`fit --config` repeats the run).
    config, workdir = resolve([read_file(resumed / "config.toml")])
    # (with what the data's spec adds: the classes' names, the image shape)
    assert with_spec(config, datasets()["mnist"].spec) == checkpoint.restore(resumed).config
    assert workdir == str(resumed)
    # The test losses in TensorBoard are those of metrics.jsonl (rewritten on resume).
    logged = {s: v for _, t, s, v in events if t == "test/test_loss"}
    assert [r["step"] for r in records(resumed)] == [8, 16, 24]
    for r in records(resumed):
        np.testing.assert_allclose(logged[r["step"]], r["test_loss"], rtol=1e-6)


@pytest.mark.slow
def test_curves_plot_and_runs_table(resumed, tmp_path, data_dir, jaxtrain):
    assert Image.open(resumed / "curves.png").size == (700, 450)  # drawn when a command ends
    other = tmp_path / "runs" / "other"
    jaxtrain(*fit_args(data_dir, other, 1, "--peak-gflops", 100), check=True)
    assert records(other)[-1]["mfu"] > 0  # utilisation, with a peak given
    out = tmp_path / "both.png"
    assert jaxtrain("plot", resumed, other, "--out", out).returncode == 0
    assert Image.open(out).size == (700, 450)
    assert jaxtrain("plot", resumed, "--metric", "test_kl", "--out", out).returncode == 0
    assert_one_line_error(jaxtrain("plot", resumed, "--metric", "nope", "--out", out), "nope",
                          "pass one of", "test_kl")  # the names it could draw
    assert_one_line_error(jaxtrain("plot", tmp_path), "no metrics.jsonl")

    shutil.copytree(resumed, tmp_path / "runs" / "resumed", ignore=shutil.ignore_patterns("tb"))
    rows = json.loads(jaxtrain("runs", tmp_path / "runs", "--json").stdout)
    by_name = {r["workdir"].split("/")[-1]: r for r in rows}
    assert by_name.keys() == {"resumed", "other"}
    row = by_name["resumed"]
    assert (row["model"], row["dataset"], row["step"], row["total_steps"]) == \
           ("vae", "mnist", 24, 24)
    best = min(records(resumed), key=lambda r: r["test_loss"])
    assert (row["best_test_loss"], row["best_step"]) == (best["test_loss"], best["step"])
    assert row["latest_test_loss"] == records(resumed)[-1]["test_loss"]
    table = jaxtrain("runs", tmp_path / "runs").stdout
    assert "24/24 (3/3)" in table and "nats/image" in table and "other" in table
    assert_one_line_error(jaxtrain("runs", tmp_path / "none"), "is not a folder")


@pytest.mark.slow
def test_eval_and_sample_take_step_best(resumed, jaxtrain):
    best = min(records(resumed), key=lambda r: r["test_loss"])
    metrics = json.loads(jaxtrain("eval", "--workdir", resumed, "--step", "best",
                                  "--json").stdout)
    assert metrics["step"] == best["step"] and metrics["test_loss"] == best["test_loss"]
    latest = json.loads(jaxtrain("eval", "--workdir", resumed, "--step", "latest",
                                 "--json").stdout)  # what the help calls the default
    assert latest["step"] == records(resumed)[-1]["step"]
    assert jaxtrain("sample", "--class", 2, "--num", 4, "--workdir", resumed, "--step",
                    "best").returncode == 0
    assert_one_line_error(jaxtrain("eval", "--workdir", resumed, "--step", "worst"),
                          "--step", "best")


@pytest.mark.slow
def test_a_diverging_run_stops_and_its_last_good_checkpoint_resumes(tmp_path, data_dir,
                                                                     jaxtrain):
    workdir = tmp_path / "run"
    assert jaxtrain(*fit_args(data_dir, workdir, 3, "--stop-at-epoch", 1)).returncode == 0
    before = {p.name for p in (workdir / "checkpoints").iterdir()}
    proc = jaxtrain("resume", "--workdir", workdir, "--lr", "1e30")
    assert proc.returncode == 3, proc.stderr
    assert_ends_in_one_error_line(proc, "between steps", "last good checkpoint is step 8",
                          "jaxtrain resume --workdir", "--lr")
    assert {p.name for p in (workdir / "checkpoints").iterdir()} == before  # nothing saved
    assert [r["step"] for r in records(workdir)] == [8]
    assert jaxtrain("resume", "--workdir", workdir).returncode == 0  # its own settings
    assert [r["step"] for r in records(workdir)] == [8, 16, 24]
    assert all(np.isfinite(r["test_loss"]) for r in records(workdir))

    fresh = tmp_path / "fresh"  # diverging before any checkpoint: nothing to go back to
    proc = jaxtrain(*fit_args(data_dir, fresh, 1, "--lr", "1e30", "--grad-clip", "1e30"))
    assert proc.returncode == 3
    assert_ends_in_one_error_line(proc, "no checkpoint was saved", "--overwrite")


@pytest.mark.slow
def test_one_writer_per_workdir_and_kill_9_leaves_no_stale_lock(tmp_path, data_dir, jaxtrain):
    workdir = tmp_path / "run"
    first = popen(*fit_args(data_dir, workdir, 500))
    try:
        assert first.stderr.readline().startswith("training vae")
        deadline = time.monotonic() + 120
        # Once step 16 is being saved, Orbax has finished step 8.
        while not (workdir / "checkpoints" / "16").is_dir() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = cli(*fit_args(data_dir, workdir, 2, "--overwrite"), check=False)
        assert_one_line_error(second, "in use by process", str(first.pid))
        assert_one_line_error(jaxtrain("resume", "--workdir", workdir), "in use by process")
        # Readers work while it trains.
        assert jaxtrain("eval", "--workdir", workdir).returncode == 0
        assert jaxtrain("runs", tmp_path).returncode == 0
        assert first.poll() is None, "the first run was disturbed"
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    proc = jaxtrain("resume", "--workdir", workdir, "--epochs", 2)  # not blocked
    # (It has trained more than 2 epochs by now: refused for that, never for the lock.)
    assert proc.returncode == 0 or "is not more than the" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_early_stopping_ends_the_run_and_resume_says_so(tmp_path, data_dir, jaxtrain):
    workdir = tmp_path / "run"
    # A learning rate this high makes the test loss worse after the first epochs.
    # (The architecture of the first runs: the current one diverges at this rate.)
    proc = jaxtrain(*fit_args(data_dir, workdir, 8, "--patience", 1, "--lr", "0.3",
                              "--ema-decay", "0", "--condition", "latent", "--prior",
                              "standard", "--activation", "relu"))
    assert proc.returncode == 0, proc.stderr
    rows = records(workdir)
    losses = [r["test_loss"] for r in rows]
    assert rows[-1]["stopped_early"] and rows[-1]["step"] < 64, losses
    assert losses[-1] >= min(losses[:-1])  # no better than the best before it
    assert all(losses[i] < min(losses[:i], default=np.inf) for i in range(len(losses) - 1))
    assert "stopped early" in proc.stderr
    assert_one_line_error(jaxtrain("resume", "--workdir", workdir), "stopped early",
                          "--patience")
    assert jaxtrain("resume", "--workdir", workdir, "--patience", 0).returncode == 0
    assert records(workdir)[-1]["step"] == 64


def test_bad_workdirs_are_one_line(tmp_path, data_dir, jaxtrain):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_one_line_error(jaxtrain(*fit_args(data_dir, a_file)), "is a file")
    assert_one_line_error(jaxtrain(*fit_args(data_dir, a_file / "sub")), "cannot be written")
    assert_one_line_error(jaxtrain("resume", "--workdir", a_file), "is a file")
    assert_one_line_error(jaxtrain("eval", "--workdir", a_file), "is a file")


@pytest.mark.slow
def test_profile_steps_write_a_trace(tmp_path, data_dir, jaxtrain):
    workdir = tmp_path / "run"
    proc = jaxtrain(*fit_args(data_dir, workdir, 1, "--profile-steps", "2:4"))
    assert "profile of steps 2-4 written to" in proc.stderr
    assert list((workdir / "profile").rglob("*.xplane.pb"))
    # 3 steps a call (0-3, 3-6, then 6 and 7 alone): from the first call that starts at or
    # after step 2 to the first that ends at or after step 4.
    proc = jaxtrain(*fit_args(data_dir, tmp_path / "c", 1, "--profile-steps", "2:4",
                              "--steps-per-call", 3))
    assert "profile of steps 3-6 written to" in proc.stderr
    assert_one_line_error(jaxtrain(*fit_args(data_dir, tmp_path / "b", 1, "--profile-steps",
                                             "5:99")), "--profile-steps 5:99")
    assert_one_line_error(jaxtrain(*fit_args(data_dir, tmp_path / "b", 1, "--profile-steps",
                                             "x")), "A:B")


@pytest.mark.slow
def test_peak_gflops_auto_is_measured_once_and_cached(tmp_path, data_dir, jaxtrain,
                                                      monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    proc = jaxtrain(*fit_args(data_dir, tmp_path / "a", 1, "--peak-gflops", "auto"))
    assert proc.returncode == 0 and "measured once and cached" in proc.stderr
    peak, = json.loads((tmp_path / "cache" / "jaxtrain" / "peak_gflops.json").read_text()
                       ).values()
    record = records(tmp_path / "a")[-1]
    assert peak > 0 and record["mfu"] == pytest.approx(record["gflops"] / peak)
    proc = jaxtrain(*fit_args(data_dir, tmp_path / "b", 1, "--peak-gflops", "auto"))
    assert "(float32 matmul, cached)" in proc.stderr
    assert_one_line_error(jaxtrain(*fit_args(data_dir, tmp_path / "c", 1, "--peak-gflops",
                                             "fast")), "--peak-gflops", "auto")


def test_tensorboard_needs_no_torch(tmp_path):
    """Text runs import no torch; tensorboardX's writer would (2.3 s) if let."""
    code = ("import sys; from jaxtrain.training.host.workarounds import summary_writer_class; "
            f"w = summary_writer_class()({str(tmp_path)!r}); w.add_scalar('a', 1.0, 0); "
            "w.close(); print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
    assert list(tmp_path.glob("events.out.tfevents.*"))
