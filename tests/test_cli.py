"""The real CLI in subprocesses: end to end, exact resume, interruption, kills, errors."""

import json
import re
import shutil
import signal
import time

import jax
import numpy as np
import pytest
from conftest import (
    TINY,
    assert_one_line_error,
    cli,
    fit_args,
    in_process,
    popen,
    write_digit_folder,
)
from events import read_events
from PIL import Image

from jaxtrain.training.metrics import METRICS
from jaxtrain.training.rundir import checkpoint

EPOCHS = 6  # 8 steps per epoch on the tiny dataset


def final(workdir):
    """(restored latest checkpoint, last metrics.jsonl record) of a run."""
    restored = checkpoint.restore(workdir)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return restored, records[-1]


def assert_same_run(a, b):
    (ra, ma), (rb, mb) = final(a), final(b)
    assert ra.step == rb.step == EPOCHS * 8
    for x, y in zip(jax.tree.leaves(ra.state), jax.tree.leaves(rb.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bitwise
    for key in ("test_loss", "test_recon", "test_kl"):
        assert ma[key] == mb[key]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data_dir):
    """A run trained from start to end without stopping (in this test process: the runs
    it is compared with, in processes of their own, compile alike)."""
    workdir = tmp_path_factory.mktemp("straight")
    in_process(*fit_args(data_dir, workdir, EPOCHS))
    return workdir


def snapshot(workdir):
    return {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}


@pytest.mark.slow
def test_fit_sample_resume_eval(tmp_path, data_dir, jaxtrain):
    workdir = tmp_path / "run"
    proc = jaxtrain("fit", "--data-dir", data_dir, "--workdir", workdir, "--epochs", 1, *TINY,
                    check=True)
    assert "epoch 1/1" in proc.stdout and "test loss" in proc.stdout
    record = json.loads((workdir / "metrics.jsonl").read_text())
    for key in ("train_loss", "train_recon", "train_kl", "train_grad_norm", "lr",
                "samples_per_s", "test_loss", "test_recon", "test_kl"):
        assert np.isfinite(record[key]), key
    width, height = Image.open(workdir / "samples_epoch001.png").size  # 10 x 10 of 28 + 2
    assert height == 302 and width > 302  # and a margin naming the rows' classes
    assert Image.open(workdir / "recon_epoch001.png").size == (302, 62)  # inputs, outputs

    out = tmp_path / "sevens.png"
    jaxtrain("sample", "--class", 7, "--num", 16, "--workdir", workdir, "--out", out, check=True)
    image = Image.open(out)
    image.load()
    assert image.size == (4 * 30 + 2, 4 * 30 + 2)
    assert jaxtrain("sample", "--class", "all", "--num", 20, "--workdir", workdir).returncode == 0
    width, height = Image.open(workdir / "sample_class_all.png").size
    assert height == 10 * 30 + 2 and width > 2 * 30 + 2  # rows named

    jaxtrain("resume", "--workdir", workdir, "--epochs", 2, check=True)
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 2

    metrics = json.loads(jaxtrain("eval", "--workdir", workdir, "--json", check=True).stdout)
    assert metrics["step"] == 16 and metrics["epoch"] == 2 and metrics["dataset"] == "mnist"
    assert metrics["test_examples"] == 30
    np.testing.assert_allclose(metrics["test_loss"], metrics["test_recon"] + metrics["test_kl"],
                               rtol=1e-5)
    last = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["test_loss"] == last["test_loss"]  # eval is deterministic
    # One name per metric: eval's keys are the record's, and every key is declared.
    tested = {k for k in last if METRICS[k].group == "test"}
    assert tested == {k for k in metrics if METRICS[k].group == "test"} == {
        "test_loss", "test_recon", "test_kl"}
    assert all(metrics[k] == last[k] for k in tested)
    assert "test loss" in jaxtrain("eval", "--workdir", workdir, "--step", 8).stdout


@pytest.mark.slow
def test_stop_then_resume_equals_uninterrupted(tmp_path, data_dir, straight, jaxtrain):
    workdir = tmp_path / "run"
    jaxtrain(*fit_args(data_dir, workdir, EPOCHS, "--stop-at-epoch", 1), check=True)
    assert final(workdir)[0].step == 8
    jaxtrain("resume", "--workdir", workdir, check=True)
    assert_same_run(straight, workdir)


@pytest.mark.slow
def test_steps_per_call_stopped_and_resumed_equals_the_straight_run(tmp_path, data_dir,
                                                                    straight, jaxtrain):
    """3 steps a call (8-step epochs: 3 + 3 + 1 + 1), stopped and resumed, is the straight
    run at 3 steps a call, bitwise; the setting is saved with the run. That S steps a call
    are S single steps bitwise holds for the default compile (tests/test_steps_per_call.py
    checks it); with the tests' compile they agree with the 1-step run to float32
    rounding."""
    per_call = ["--steps-per-call", 3, "--log-every", 2]
    jaxtrain(*fit_args(data_dir, tmp_path / "straight3", EPOCHS, *per_call), check=True)
    workdir = tmp_path / "run"
    jaxtrain(*fit_args(data_dir, workdir, EPOCHS, *per_call, "--stop-at-epoch", 1), check=True)
    jaxtrain("resume", "--workdir", workdir, check=True)
    assert_same_run(tmp_path / "straight3", workdir)
    assert "steps_per_call = 3" in (workdir / "config.toml").read_text()
    lines = [(workdir / "metrics.jsonl"), (straight / "metrics.jsonl")]
    a, b = ([json.loads(line) for line in f.read_text().splitlines()] for f in lines)
    np.testing.assert_allclose([r["train_loss"] for r in a], [r["train_loss"] for r in b],
                               rtol=1e-5)
    assert [r["train_steps"] for r in a] == [8] * EPOCHS


@pytest.mark.slow
def test_steps_per_call_chosen_from_the_step_time_is_saved_and_kept(tmp_path, data_dir,
                                                                   jaxtrain):
    """--steps-per-call 0: fit times the step, says the S it chose and saves it; a resume
    keeps it. (That any S trains what S = 1 does, bitwise on a CPU, the test above checks
    with the default compile; this one runs with the tests'.)"""
    workdir = tmp_path / "run"
    out = jaxtrain(*fit_args(data_dir, workdir, EPOCHS, "--steps-per-call", 0,
                             "--stop-at-epoch", 1), check=True)
    chosen = re.search(r"--steps-per-call 0: a step takes [0-9.]+ ms, so (\d+) steps a call",
                       out.stderr)
    assert chosen, out.stderr
    s = int(chosen.group(1))
    assert 1 <= s <= 8  # at most the steps between evaluations
    assert f"steps_per_call = {s}" in (workdir / "config.toml").read_text()
    jaxtrain("resume", "--workdir", workdir, check=True)
    assert f"steps_per_call = {s}" in (workdir / "config.toml").read_text()
    assert final(workdir)[0].step == EPOCHS * 8


@pytest.mark.slow
def test_sigterm_saves_mid_epoch_and_resume_is_exact(tmp_path, data_dir, straight, jaxtrain):
    workdir = tmp_path / "run"
    proc = popen(*fit_args(data_dir, workdir, EPOCHS))
    assert proc.stderr.readline().startswith("training vae")  # handlers are installed
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"jaxtrain resume --workdir {workdir}" in err and "Traceback" not in err
    restored, = [checkpoint.restore(workdir)]
    assert restored.step < EPOCHS * 8
    jaxtrain("resume", "--workdir", workdir, check=True)
    assert_same_run(straight, workdir)


def kill_when(workdir, proc, ready, timeout=120):
    """SIGKILLs `proc` as soon as ready(checkpoint folder entries) is true."""
    ckpt = workdir / "checkpoints"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        names = [p.name for p in ckpt.iterdir()] if ckpt.is_dir() else []
        if ready(names):
            proc.kill()
            proc.wait()
            return names
        time.sleep(0.001)
    proc.kill()
    raise AssertionError("the run ended before the moment to kill it came")


@pytest.mark.slow
def test_kill_9_during_training_leaves_a_resumable_run(tmp_path, data_dir, straight, jaxtrain):
    workdir = tmp_path / "run"
    proc = popen(*fit_args(data_dir, workdir, EPOCHS))
    kill_when(workdir, proc, lambda names: any(n.isdigit() for n in names))
    jaxtrain("resume", "--workdir", workdir, check=True)
    assert_same_run(straight, workdir)


@pytest.mark.slow
def test_kill_9_during_a_save_leaves_a_resumable_run(tmp_path, data_dir, straight, jaxtrain):
    workdir = tmp_path / "run"
    proc = popen(*fit_args(data_dir, workdir, EPOCHS))
    # A save in flight after at least one finished checkpoint (killing the very first
    # save leaves no checkpoint, and resume rightly says so).
    names = kill_when(workdir, proc, lambda names: any("tmp" in n for n in names)
                      and any(n.isdigit() for n in names))
    assert any("tmp" in n for n in names)
    # The killed run was a process of its own: its start to its first finished step.
    first = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 < first["first_step_s"] < 300
    jaxtrain("resume", "--workdir", workdir, check=True)
    assert_same_run(straight, workdir)


def corrupt(step_dir):
    for path in (step_dir / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_and_is_kept(tmp_path, straight, jaxtrain):
    workdir = tmp_path / "run"
    shutil.copytree(straight, workdir)
    latest = EPOCHS * 8
    corrupt(workdir / "checkpoints" / str(latest))

    proc = jaxtrain("eval", "--workdir", workdir, "--json", check=True)
    assert json.loads(proc.stdout)["step"] == latest - 8
    assert f"checkpoint step {latest}" in proc.stderr and "Traceback" not in proc.stderr
    assert (workdir / "checkpoints" / str(latest)).is_dir()  # never deleted
    assert jaxtrain("sample", "--class", 3, "--workdir", workdir).returncode == 0

    jaxtrain("resume", "--workdir", workdir, check=True)  # redoes the last epoch
    assert (workdir / "broken-checkpoints" / str(latest)).is_dir()
    assert final(workdir)[0].step == latest


@pytest.mark.slow
def test_no_checkpoint_restores_is_a_clear_error(tmp_path, straight, jaxtrain):
    workdir = tmp_path / "run"
    shutil.copytree(straight, workdir)
    for step_dir in (workdir / "checkpoints").iterdir():
        corrupt(step_dir)
    before = snapshot(workdir)
    proc = jaxtrain("eval", "--workdir", workdir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no checkpoint")
    assert snapshot(workdir) == before


@pytest.mark.slow
def test_fit_refuses_a_workdir_holding_a_run(tmp_path, data_dir, straight, jaxtrain):
    workdir = tmp_path / "run"
    shutil.copytree(straight, workdir)
    before = snapshot(workdir)
    proc = jaxtrain(*fit_args(data_dir, workdir, EPOCHS))
    assert_one_line_error(proc, "already holds a run", "--overwrite", "jaxtrain resume")
    assert proc.returncode == 2
    assert snapshot(workdir) == before


@pytest.mark.slow
def test_workdir_of_an_unknown_model(tmp_path, straight, jaxtrain):
    workdir = tmp_path / "run"
    shutil.copytree(straight, workdir)
    for config in (workdir / "checkpoints").glob("*/config/metadata"):
        data = json.loads(config.read_text())
        config.write_text(json.dumps({**data, "model": "gan"}))
    assert_one_line_error(jaxtrain("sample", "--class", 1, "--workdir", workdir), "'gan'")


@pytest.mark.parametrize("args, fragments", [
    (["fit", "--model", "gan"], ["--model", "gan"]),
    (["fit", "--dataset", "cifar"], ["--dataset", "cifar"]),
    (["fit", "--epochs", "0"], ["--epochs", "0"]),
    (["fit", "--batch-size", "-1"], ["--batch-size", "-1"]),
    (["fit", "--lr", "0"], ["--lr"]),
    (["resume", "--workdir", "{tmp}/missing"], ["does not exist", "--workdir"]),
    (["eval", "--workdir", "{tmp}"], ["no jaxtrain checkpoints"]),
    (["sample", "--class", "1", "--workdir", "{tmp}/missing"], ["does not exist"]),
    (["fit", "--workdir", "{tmp}/run", "--data-dir", "{tmp}", "--no-download"],
     ["MNIST/raw", "train-images-idx3-ubyte", "--data-dir", "dataset-fashion-mnist"]),
])
def test_user_errors_are_one_line(tmp_path, args, fragments, jaxtrain):
    args = [a.format(tmp=tmp_path) for a in args]
    proc = jaxtrain(*args)
    assert_one_line_error(proc, *fragments)
    assert proc.returncode == 2


@pytest.mark.slow
def test_class_out_of_range_names_the_valid_ones(straight, jaxtrain):
    proc = jaxtrain("sample", "--class", 12, "--workdir", straight)
    assert_one_line_error(proc, "--class 12", "0-9")
    proc = jaxtrain("sample", "--class", "x", "--workdir", straight)
    assert_one_line_error(proc, "--class 'x' is not a class of this run", "0-9 or all")


@pytest.mark.slow
def test_resume_of_a_finished_run_says_how_to_train_longer(straight, jaxtrain):
    proc = jaxtrain("resume", "--workdir", straight)
    assert_one_line_error(proc, "already finished", "--epochs")
    proc = jaxtrain("resume", "--workdir", straight, "--epochs", EPOCHS + 2, "--stop-at-epoch", 2)
    assert_one_line_error(proc, "--stop-at-epoch 2")


def test_user_error_through_a_subprocess(tmp_path):
    proc = cli("resume", "--workdir", tmp_path / "missing", check=False)
    assert_one_line_error(proc, "does not exist")
    assert proc.returncode == 2


TRANSFORMER = ["--model", "transformer", "--layers", "1", "--d-model", "32", "--heads", "2",
               "--batch-size", "8", "--warmup-steps", "2", "--no-download"]


@pytest.mark.slow
def test_transformer_digits_fit_resume_sample_eval(tmp_path, jaxtrain):
    """The same trainer, checkpoints and commands serve the Transformer; resume is exact
    (dropout and dynamic binarization keys come from the step), with gradient
    accumulation too. On the tiny digits as an 8 x 8 folder: 16 tokens an image, so its
    grids of 100 samples, drawn token by token, take a twelfth of MNIST's 196 steps."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    data_dir = write_digit_folder(tmp_path / "digits", 8)  # eval --samples reads its judge
    args = ["fit", "--dataset", "folder", "--image-size", 8, "--data-dir", data_dir,
            "--epochs", 2, *TRANSFORMER, "--accumulate", 2]
    jaxtrain(*args, "--workdir", straight, check=True)
    jaxtrain(*args, "--workdir", stopped, "--stop-at-epoch", 1, check=True)
    jaxtrain("resume", "--workdir", stopped, check=True)
    (a, ma), (b, mb) = final(straight), final(stopped)
    assert a.step == b.step == 16 and ma["test_loss"] == mb["test_loss"]
    for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert ma["tokens_per_s"] > 0 and ma["test_bits_per_dim"] > 0

    metrics = json.loads(jaxtrain("eval", "--workdir", straight, "--json").stdout)
    assert metrics["model"] == "transformer" and metrics["test_loss"] == ma["test_loss"]
    np.testing.assert_allclose(metrics["test_bits_per_dim"],
                               metrics["test_loss"] / (8 * 8 * np.log(2)))
    out = tmp_path / "sevens.png"
    assert jaxtrain("sample", "--class", 7, "--num", 4, "--workdir", straight, "--out", out,
                    "--temperature", 0.8, "--top-k", 4).returncode == 0
    assert Image.open(out).size == (2 * 10 + 2, 2 * 10 + 2)
    assert Image.open(straight / "samples_epoch002.png").size[1] == 10 * 10 + 2
    # The judge scores the Transformer's binary samples against the binarized test set.
    scored = json.loads(jaxtrain("eval", "--workdir", straight, "--samples", 2, "--json",
                                 check=True).stdout)
    assert scored["sample_pixels"] == "binary" and 0 <= scored["test_class_accuracy"] <= 1
    assert scored["test_frechet"] > 0 and len(scored["class_accuracy_per_class"]) == 10


@pytest.mark.slow
def test_options_of_the_other_model_are_refused(jaxtrain, straight):
    assert_one_line_error(jaxtrain("fit", "--model", "transformer", "--latent-dim", 3),
                          "--latent-dim", "vae option")
    assert_one_line_error(jaxtrain("sample", "--class", 1, "--workdir", straight,
                                   "--temperature", 0.5), "--temperature", "vae run")
    assert_one_line_error(jaxtrain("sample", "--class", 1, "--workdir", straight,
                                   "--top-p", 0.9), "--top-p", "vae run")
    assert_one_line_error(jaxtrain("sample", "--prompt", "x", "--workdir", straight),
                          "--prompt applies to text models")


TEXT_MODEL = ["--model", "transformer", "--dataset", "text", "--layers", "1", "--d-model", "16",
              "--heads", "2", "--context", "16", "--batch-size", "4", "--warmup-steps", "2",
              "--steps", "30", "--eval-every", "10"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "t.txt"
    path.write_text("to be or not to be, that is the question.\n" * 30, encoding="utf-8")
    return path


@pytest.mark.slow
def test_text_model_fit_interrupt_resume_sample_eval(tmp_path, text_file, jaxtrain):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    args = ["fit", "--data-file", text_file, *TEXT_MODEL]
    proc = jaxtrain(*args, "--workdir", straight, check=True)
    assert "step 30/30" in proc.stdout and "bits_per_char" in proc.stdout
    texts = {step: text for kind, tag, step, text in read_events(straight / "tb")
             if kind == "text" and tag == "sample"}
    # The sample is the context long (16 here: models/charlm.py's PREVIEW_CHARS).
    assert sorted(texts) == [10, 20, 30] and all(len(t) == 16 for t in texts.values())

    proc = popen(*args, "--workdir", stopped)
    assert proc.stderr.readline().startswith("training transformer on text")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    jaxtrain("resume", "--workdir", stopped, check=True)
    (a, ma), (b, mb) = final(straight), final(stopped)
    assert a.step == b.step == 30 and ma["test_loss"] == mb["test_loss"]
    for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    metrics = json.loads(jaxtrain("eval", "--workdir", straight, "--json").stdout)
    assert metrics["dataset"] == "text" and metrics["test_loss"] == ma["test_loss"]
    np.testing.assert_allclose(metrics["test_bits_per_char"], metrics["test_loss"] / np.log(2))
    proc = jaxtrain("sample", "--workdir", straight, "--prompt", "to be", "--length", 40,
                    "--temperature", 0)
    out = proc.stdout
    assert out.startswith("to be") and len(out.rstrip("\n")) >= 45
    assert re.fullmatch(r"sampled 40 tokens in [\d.]+ s \([\d,]+ tokens/s after a [\d.]+ s "
                        r"compile\)\n", proc.stderr), proc.stderr
    written = tmp_path / "t.txt"  # --out writes the text too (it was silently ignored)
    proc = jaxtrain("sample", "--workdir", straight, "--prompt", "to be", "--length", 40,
                    "--temperature", 0, "--out", written, check=True)
    assert written.read_text() == proc.stdout.rstrip("\n") == out.rstrip("\n")
    # Nucleus sampling after top-k and temperature (within the context: one program to
    # compile; tests/test_text.py samples past it).
    nucleus = jaxtrain("sample", "--workdir", straight, "--prompt", "to be", "--length", 10,
                       "--temperature", 0.8, "--top-k", 5, "--top-p", 0.9, check=True).stdout
    assert nucleus.startswith("to be") and len(nucleus.rstrip("\n")) >= 10
    for p in (0, 1.5):
        assert_one_line_error(jaxtrain("sample", "--workdir", straight, "--prompt", "to be",
                                       "--top-p", p), "--top-p must be a number in (0, 1]")
    assert_one_line_error(jaxtrain("sample", "--workdir", straight, "--class", 1),
                          "--class applies to image models")
    assert_one_line_error(jaxtrain("eval", "--workdir", straight, "--samples", 2),
                          "--samples scores image samples")
    assert_one_line_error(jaxtrain("sample", "--workdir", straight, "--prompt", "to be ¿"),
                          "not in the model's vocabulary", "'¿'")
    assert_one_line_error(jaxtrain("sample", "--workdir", straight, "--prompt", "to be " * 4),
                          "the model's context")


@pytest.mark.slow
def test_text_user_errors(tmp_path, text_file, jaxtrain):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    base = ["fit", "--workdir", tmp_path / "run", *TEXT_MODEL]
    assert_one_line_error(jaxtrain(*base, "--data-file", empty), "is empty")
    assert_one_line_error(jaxtrain(*base, "--data-file", text_file, "--context", 2000),
                          "too short for --context 2000")
    assert_one_line_error(jaxtrain(*base), "--data-file")
    assert_one_line_error(jaxtrain(*base, "--data-file", text_file, "--epochs", 2),
                          "exactly one of --epochs and --steps")
    assert_one_line_error(jaxtrain("fit", "--dataset", "text", "--data-file", text_file),
                          "--model transformer")


@pytest.mark.slow
def test_text_val_file_for_eval_and_resume(tmp_path, text_file, jaxtrain):
    """eval --val-file scores the run on another text, read alone; resume --val-file keeps
    the run's validation text (its own file, or where it moved), refusing another."""
    short = [*TEXT_MODEL, "--steps", 4, "--eval-every", 2]
    other = tmp_path / "other.txt"
    other.write_text("not to be, that is the question. " * 20, encoding="utf-8")
    split, held = tmp_path / "split", tmp_path / "held"
    jaxtrain("fit", "--data-file", text_file, *short, "--workdir", split, check=True)
    own = json.loads(jaxtrain("eval", "--workdir", split, "--json", check=True).stdout)
    on_other = json.loads(jaxtrain("eval", "--workdir", split, "--val-file", other,
                                   "--data-file", tmp_path / "gone.txt", "--json",
                                   check=True).stdout)  # the training text is not read
    assert own["val_file"] is None and on_other["val_file"] == str(other)
    assert on_other["test_loss"] != own["test_loss"]
    assert f"test windows of {other})" in jaxtrain("eval", "--workdir", split, "--val-file",
                                                   other, check=True).stdout
    odd = tmp_path / "odd.txt"
    odd.write_text("to be ¿ " * 20, encoding="utf-8")
    assert_one_line_error(jaxtrain("eval", "--workdir", split, "--val-file", odd),
                          f"--val-file {odd}: characters not in the model's vocabulary", "'¿'")
    assert_one_line_error(jaxtrain("resume", "--workdir", split, "--val-file", other,
                                   "--steps", 6), "validates on the last 10% of each")

    val = tmp_path / "val.txt"
    shutil.copy(other, val)
    jaxtrain("fit", "--data-file", text_file, "--val-file", val, *short, "--workdir", held,
             check=True)
    assert_one_line_error(jaxtrain("resume", "--workdir", held, "--val-file", text_file,
                                   "--steps", 6), f"validates on {val}; a resumed run keeps")
    jaxtrain("resume", "--workdir", held, "--val-file", val, "--steps", 6, check=True)
    val.rename(tmp_path / "val2.txt")  # the text moved: resume is told where
    jaxtrain("resume", "--workdir", held, "--val-file", tmp_path / "val2.txt", "--steps", 8,
             check=True)
    assert f'val_file = "{tmp_path / "val2.txt"}"' in (held / "config.toml").read_text()
    records = [json.loads(line) for line in (held / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
