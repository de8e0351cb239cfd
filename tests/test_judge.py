"""The judge (a small CNN trained on the dataset) and the scores it gives samples: class
accuracy and the Frechet distance in its features."""

import json

import jax
import numpy as np
import pytest
from conftest import TINY, assert_one_line_error, write_digit_folder

from jaxtrain.models.judge import class_accuracy, frechet_distance
from jaxtrain.training.engine.steps import sample_key
from jaxtrain.training.scoring.judge import judge_path, load_or_train
from jaxtrain.training.settings.config import DataConfig
from jaxtrain.training.sources.images import ImageSource


def test_frechet_distance_hand_computed():
    a = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # mean (1, 1), cov 4/3 I
    assert abs(frechet_distance(a, a)) < 1e-9
    b = 2 * a + np.array([3.0, 0.0])  # mean (5, 2), cov 16/3 I
    # |(1,1) - (5,2)|^2 + Tr(4/3 I + 16/3 I - 2 (64/9 I)^(1/2)) = 17 + 2 * (20/3 - 16/3)
    np.testing.assert_allclose(frechet_distance(a, b), 17 + 8 / 3, rtol=1e-9)
    np.testing.assert_allclose(frechet_distance(b, a), 17 + 8 / 3, rtol=1e-9)


def test_frechet_distance_survives_dead_features():
    """Features that are 0 for every image (dead ReLUs) make the covariances singular."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 4)), rng.normal(1.0, 1.0, size=(60, 4))
    a[:, 3] = b[:, 3] = 0.0
    d = frechet_distance(a, b)
    assert np.isfinite(d) and d > 1.0


def test_class_accuracy_hand_computed():
    asked = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 0, 0])
    np.testing.assert_allclose(class_accuracy(predicted, asked, 3), [0.5, 1.0, 0.0])


@pytest.fixture(scope="module")
def judged(judged_data_dir):
    return DataConfig("mnist", str(judged_data_dir), download=False)


@pytest.fixture(scope="module")
def source(judged):
    return ImageSource(judged, 8, 0)


@pytest.fixture(scope="module")
def judge(source, judged, judged_data_dir):
    """The judge conftest.write_judged_dataset trained (150 steps) on the tiny data."""
    return load_or_train(source, judge_path(judged, judged_data_dir), 10, epochs=1,
                         min_steps=150)


@pytest.mark.slow
def test_judge_trains_on_tiny_data_and_is_kept(judge, source, capsys):
    # The fixture's classes are bars at 10 heights, in noise: easy to tell apart.
    assert judge.accuracy >= 0.9 and judge.accuracy_binary >= 0.9
    again = load_or_train(source, judge.path, 10, epochs=1, min_steps=150)
    assert again.trained_s is None and again.accuracy == judge.accuracy  # read, not trained
    images = source.test.images / 255.0  # [N, H, W, C]
    labels, features = again.classify(images)
    np.testing.assert_array_equal(labels, judge.classify(images)[0])
    assert features.shape == (len(images), 256)
    # Identical sets are at distance 0 in its features (to rounding: 30 images in 256
    # features leave 226 zero eigenvalues, whose float64 noise a square root magnifies).
    scale = np.trace(np.cov(features, rowvar=False))
    assert abs(frechet_distance(features, features)) < 1e-6 * scale


@pytest.mark.slow
def test_judge_is_trained_again_when_the_data_changes(judge, source, data_dir, tmp_path,
                                                     capsys):
    path = tmp_path / "judge.msgpack"
    path.write_bytes(judge.path.read_bytes())
    changed = ImageSource(DataConfig("mnist", str(data_dir), download=False), 8, 0)
    changed.train.images = changed.train.images.copy()
    changed.train.images[0, 0] ^= 1  # one pixel of one training image
    assert load_or_train(changed, path, 10, epochs=1, min_steps=10).trained_s is not None
    assert "the data changed" in capsys.readouterr().err
    path.write_bytes(b"not a judge")
    assert load_or_train(source, path, 10, epochs=1, min_steps=10).trained_s is not None
    assert "does not read" in capsys.readouterr().err


@pytest.mark.slow
def test_class_accuracy_of_a_model_that_ignores_the_class_is_chance(
        tmp_path, data_dir, jaxtrain, source, judge):
    """A trained class-conditional VAE draws the classes asked for; the same VAE with its
    class inputs cut (the one-hot rows of its decoder's kernels zeroed, one N(0, I) prior
    for all classes) scores about 1/10."""
    from jaxtrain.training.engine.run import Run
    from jaxtrain.training.rundir import checkpoint
    from jaxtrain.training.scoring.quality import sample_quality

    workdir = tmp_path / "run"
    jaxtrain("fit", "--data-dir", data_dir, "--workdir", workdir, "--epochs", 20, *TINY,
             "--lr", "1e-2", "--no-tensorboard", check=True)
    restored = checkpoint.restore(workdir)
    run = Run(restored.config, restored.position["steps_per_epoch"])
    params = restored.state.ema_params
    key = sample_key(run.config.train.seed)
    uses = sample_quality(run, params, source, judge, 50, key)

    def blind(path, x):  # the last 10 input rows of a decoder kernel read the one-hot
        names = [getattr(k, "key", "") for k in path]
        if names[0] in ("decoder", "out") and names[-1] == "kernel":
            return x.at[-10:].set(0.0)
        return jax.numpy.zeros_like(x) if names[0].startswith("prior") else x

    ignores = sample_quality(run, jax.tree_util.tree_map_with_path(blind, params), source,
                             judge, 50, key)
    assert uses["test_class_accuracy"] >= 0.8, uses
    assert abs(ignores["test_class_accuracy"] - 0.1) < 0.1, ignores
    assert uses["test_frechet"] < ignores["test_frechet"]
    assert ignores["test_frechet_floor"] == uses["test_frechet_floor"]


@pytest.mark.slow
def test_judge_command_eval_samples_and_final_eval(tmp_path, jaxtrain):
    """The CLI end to end: `judge` trains and keeps it; `fit --final-eval samples=N`
    and `eval --samples N` report the same scores."""
    # Its own data, without a judge: a grey folder of 16 training images at 8 x 8, one
    # batch an epoch, trained for 150 steps (--steps; the default's 1,000 steps took 12 s
    # with the tests' compile).
    data_dir = write_digit_folder(tmp_path / "data", 8, n_train=16, judge=False)
    data = ["--dataset", "folder", "--image-size", 8, "--data-dir", data_dir]
    proc = jaxtrain("judge", *data, "--steps", 150, check=True)
    assert "judge epoch 150/150: train loss" in proc.stderr
    assert "judge of folder (16 training images, 10 classes), trained in" in proc.stdout
    assert "trained the judge" not in proc.stderr  # the result, said once
    assert (data_dir / ".jaxtrain-judge.msgpack").exists()
    again = jaxtrain("judge", *data, check=True)
    assert "trained earlier, on this same data" in again.stdout
    workdir = tmp_path / "run"
    proc = jaxtrain("fit", *data, "--workdir", workdir, "--epochs", 2, *TINY,
                    "--final-eval", "samples=5", check=True)
    assert "samples (5 per class, grey pixels): class accuracy" in proc.stderr
    assert "class_accuracy" not in proc.stdout and "frechet" not in proc.stdout  # said once
    last = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= last["test_class_accuracy"] <= 1 and len(last["class_accuracy_per_class"]) == 10
    m = json.loads(jaxtrain("eval", "--workdir", workdir, "--samples", 5, "--json",
                            check=True).stdout)
    for key in ("test_class_accuracy", "test_frechet", "test_frechet_floor", "judge_accuracy"):
        assert m[key] == last[key], key
    text = jaxtrain("eval", "--workdir", workdir, "--samples", 5, check=True).stdout
    assert "the judge's own test accuracy" in text and "Frechet distance" in text


@pytest.mark.slow
def test_judge_command_reads_the_raw_folder(judged_data_dir, jaxtrain):
    """--data-dir may name the raw folder itself (where the IDX files are)."""
    again = jaxtrain("judge", "--dataset", "mnist", "--data-dir",
                     judged_data_dir / "MNIST" / "raw", "--no-download", check=True)
    assert "trained earlier, on this same data" in again.stdout


def test_judge_errors(tmp_path, jaxtrain):
    # The datasets with a judge come from the registry: scikit-learn's digits too.
    assert_one_line_error(jaxtrain("judge", "--dataset", "text"), "--dataset 'text' has no judge",
                          "mnist, fashion-mnist, digits, folder")
    assert_one_line_error(jaxtrain("judge", "--dataset", "folder"), "needs --data-dir")
    assert_one_line_error(jaxtrain("judge", "--steps", 0), "--steps")
    assert_one_line_error(jaxtrain("fit", "--final-eval", "samples=x", "--print-config"),
                          "--final-eval takes iw=K")
    assert_one_line_error(jaxtrain("fit", "--dataset", "text", "--data-file", __file__,
                                   "--model", "transformer", "--final-eval", "samples=4",
                                   "--print-config"), "samples=N scores image samples")
    assert_one_line_error(jaxtrain("fit", "--model", "transformer", "--final-eval", "iw=4",
                                   "--print-config"), "iw=K applies to VAE runs")
