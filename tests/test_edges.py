"""Rough edges a first try hits (issue 21): messages that point the right way, options
that are never silently ignored. In-process and cheap: validation paths that fail
before anything compiles, or small helpers."""

import json

import jax
import pytest
from conftest import assert_one_line_error

from jaxtrain.cli.app import parse_step
from jaxtrain.training.engine.parallel import DataParallel


def test_step_latest_is_the_default_the_help_names():
    assert parse_step("latest") is None and parse_step(None) is None
    assert parse_step("best") == "best" and parse_step("12") == 12
    with pytest.raises(ValueError, match="'latest' or 'best'"):
        parse_step("worst")


def test_too_many_devices_says_what_to_pass():
    n = len(jax.devices())
    with pytest.raises(ValueError) as e:
        DataParallel(n + 1)
    message = str(e.value)
    assert f"1 to {n}" not in message if n == 1 else f"1 to {n}" in message
    if n == 1:
        assert "leave --devices out" in message and "device(s)" not in message


def test_plot_of_an_unknown_metric_lists_the_known_ones(tmp_path, jaxtrain):
    (tmp_path / "metrics.jsonl").write_text(json.dumps(
        {"step": 8, "train_loss": 3.0, "test_loss": 2.0, "test_kl": 1.0}) + "\n")
    proc = jaxtrain("plot", tmp_path, "--metric", "nope", "--out", tmp_path / "x.png")
    assert_one_line_error(proc, "--metric nope", "pass one of", "test_kl, test_loss")
