"""Where a command's start goes: JAX's own compile events name each program and say
whether the persistent cache served it; a run's first record and its start line give
the parts, and a second identical command loads every program from the cache."""

import jax
import jax.numpy as jnp
import pytest
from conftest import cli, fit_args, records

from jaxtrain.training.engine.startup import describe_start
from jaxtrain.training.host.compiles import Compiles


def double_plus_one(x):
    return x * 2 + 1


def test_compiles_are_named_and_cache_loads_are_told_apart():
    compiles = Compiles()
    try:
        jax.jit(double_plus_one)(jnp.arange(3.0))
        seconds, cached = compiles.take(least=0)
        assert "double_plus_one" in seconds and "double_plus_one" not in cached
        assert compiles.take() == ({}, [])  # taken
        jax.clear_caches()  # the next call asks the persistent cache (tests/conftest.py)
        jax.jit(double_plus_one)(jnp.arange(3.0))
        seconds, cached = compiles.take(least=0)
        assert "double_plus_one" in seconds and "double_plus_one" in cached
    finally:
        compiles.close()


def test_many_small_programs_add_up_as_others():
    compiles = Compiles()
    compiles.close()
    compiles.programs = [("a", 0.01, True), ("b", 0.02, False), ("train_step", 2.0, True)]
    seconds, cached = compiles.take(least=0.05)
    assert seconds == pytest.approx({"train_step": 2.0, "others": 0.03})
    assert cached == ["train_step"]  # "others" holds a fresh compile


def test_the_start_line_names_the_parts_and_the_longest_compiles():
    record = {"start_imports_s": 5.21, "start_data_s": 1.04, "first_step_s": 9.13,
              "compile_s": {"train_step": 2.3, "eval_sums": 0.6, "a": 0.2, "b": 0.1,
                            "c": 0.05, "d": 0.05},
              "compile_cached": ["eval_sums"], "compile_background": ["train_step"]}
    assert describe_start(record) == (
        "start: imports 5.2 s, data 1.0 s; compile train_step 2.3 s (background), eval_sums "
        "0.6 s (cached), a 0.2 s, b 0.1 s, 2 others 0.1 s; first step 9.1 s after the "
        "command started")


@pytest.mark.slow
def test_a_second_identical_command_loads_every_program_from_the_cache(tmp_path, data_dir):
    env = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla")}  # empty: the first compiles
    for name in ("first", "second"):
        proc = cli(*fit_args(data_dir, tmp_path / name, 1), env=env)
        assert "start: imports" in proc.stderr
    first, second = records(tmp_path / "first")[0], records(tmp_path / "second")[0]
    for record in (first, second):
        assert {"start_imports_s", "start_data_s", "start_init_s", "first_step_s"} <= set(
            record)
        assert "train_step" in record["compile_s"]  # (eval_sums may be small: "others")
    assert "train_step" not in first["compile_cached"]
    assert set(second["compile_cached"]) == set(second["compile_s"])  # nothing compiled


def test_a_second_run_of_one_configuration_in_a_process_compiles_nothing_again(
        tmp_path, data_dir, jaxtrain):
    """training/engine/run.py: a configuration's family, optimizer and jitted steps are
    built once per process, so a second command of it (a notebook's fit, then another)
    neither traces nor compiles its programs again, and computes the same."""
    runs = [tmp_path / "first", tmp_path / "second"]
    for workdir in runs:  # a seed no other test uses: the first builds and compiles
        jaxtrain(*fit_args(data_dir, workdir, 1, "--seed", 97531), check=True)
    compiled = [{name for r in records(w) for name in r.get("compile_s", {})} for w in runs]
    # (eval_sums may come compiled already: jit knows an equal family's from an earlier test)
    assert {"train_step", "init_state"} <= compiled[0]
    assert not {"train_step", "init_state", "eval_sums"} & compiled[1], compiled[1]
    losses = [[r["train_loss"] for r in records(w) if "train_loss" in r] for w in runs]
    assert losses[0] == losses[1] and losses[0]
