"""The loop hands every callback a finished record: evaluated before any hook runs,
read-only in on_eval and on_save, whose additions no other callback of the same phase
sees, so the order of the callbacks does not matter."""

import collections

import jax
import numpy as np
import pytest
from conftest import SHAPE, records
from events import read_events
from test_accumulate import image_batches
from test_steps_per_call import vae_run

from jaxtrain.models.spec import ImageSpec
from jaxtrain.training.engine.loop import Callback, Loop, run_loop
from jaxtrain.training.metrics import METRICS, tag
from jaxtrain.training.rundir.writers import Curves, Jsonl, TensorBoard
from jaxtrain.training.sources.base import Source

TIMES = ("train_s", "data_s", "eval_s", "period_s", "samples_per_s", "gflops")


SPEC = ImageSpec(SHAPE, tuple(str(c) for c in range(10)))


class ArraySource:
    """The smallest data source (training/sources/base.py): three batches in memory."""

    steps_per_epoch = None
    spec = SPEC
    eval_examples = 8

    def __init__(self):
        self.batches = image_batches(8)

    def train_batches(self, start_step):
        step = start_step
        while True:
            yield self.batches[step % len(self.batches)]
            step += 1

    def eval_batches(self, batch_size=None):
        yield {**self.batches[0], "mask": np.ones(8, np.float32)}

    def preview(self):
        return None


class Spy(Callback):
    """Notes what each phase sees and adds a key of its own in on_eval and on_save."""

    def __init__(self, name, seen):
        self.name, self.seen = name, seen

    def on_eval(self, loop, record):
        self.seen.append((self.name, "eval", dict(record)))
        with pytest.raises(TypeError):
            record["mine"] = 1  # read-only: additions are returned
        return {f"{self.name}_eval": loop.step}

    def on_save(self, loop, record):
        self.seen.append((self.name, "save", dict(record)))
        return {f"{self.name}_save": loop.step}

    def on_record(self, loop, record):
        self.seen.append((self.name, "record", dict(record)))


class Keeper(Callback):
    """A writer that keeps the record (as metrics.jsonl): its on_record comes last."""

    keeps_record = True

    def __init__(self, seen):
        self.seen = seen

    def on_record(self, loop, record):
        self.seen.append(("keeper", dict(record)))


def records_of(run, order, kept=None):
    seen = []
    spies = {name: Spy(name, seen) for name in ("a", "b")}
    loop = Loop(run, None, run.init_state(), ArraySource(), 0, 4, {})
    run_loop(loop, [Keeper(kept if kept is not None else []),
                    *(spies[name] for name in order)])
    return seen


def test_the_record_is_finished_before_the_hooks_and_order_does_not_matter():
    assert isinstance(ArraySource(), Source)  # the protocol's members, structurally
    run = vae_run(eval_every=2)  # one run: its steps compile once
    kept = []
    forward, backward = records_of(run, "ab", kept), records_of(run, "ba")
    # The record's keeper comes after the other writers, and has their seconds.
    assert [r["step"] for _, r in kept] == [2, 4] and all(r["writers_s"] >= 0 for _, r in kept)
    assert not any("writers_s" in r for _, p, r in forward if p == "record")
    for seen in (forward, backward):
        assert [(n, p, r["step"]) for n, p, r in seen if n == "a"] == [
            ("a", p, s) for s in (2, 4) for p in ("eval", "save", "record")]
        for name, phase, record in seen:
            # Evaluated by the loop before any hook: train and test metrics together.
            assert {"train_loss", "lr", "test_loss", "test_recon", "test_kl", "eval_s"} <= set(
                record)
            added = {k for k in record if k.endswith(("_eval", "_save"))}
            expected = {"eval": set(), "save": {"a_eval", "b_eval"},
                        "record": {"a_eval", "b_eval", "a_save", "b_save"}}[phase]
            assert added == expected, (name, phase)
    # The same records whichever callback comes first (timings aside).
    def final(seen):
        return [{k: v for k, v in r.items() if k not in TIMES}
                for n, p, r in seen if n == "a" and p == "record"]
    assert final(forward) == final(backward)


class FullDisk(Callback):
    def on_record(self, loop, record):
        raise OSError("No space left on device")


def test_curves_draw_the_newest_record_and_a_failing_writer_keeps_it(tmp_path, monkeypatch):
    """The record's keepers (metrics.jsonl, then curves.png drawn from it, in the list's
    order) come after the other writers, wherever they are listed, even when one of
    those fails."""
    monkeypatch.setattr(Curves, "SPACING", 0)  # a drawing at every evaluation
    run = vae_run(eval_every=2)
    drawn = []

    def draw(self, loop):
        drawn.append(len(records(loop.workdir)))
        self.drawn = True

    monkeypatch.setattr(Curves, "draw", draw)
    run_loop(Loop(run, tmp_path, run.init_state(), ArraySource(), 0, 4, {}),
             [Jsonl(), Curves()])
    assert drawn == [1, 2]  # each drawing saw the record of its evaluation
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(OSError):
        run_loop(Loop(run, other, run.init_state(), ArraySource(), 0, 4, {}),
                 [Jsonl(), FullDisk()])
    assert [r["step"] for r in records(other)] == [2]


def test_the_step_flops_are_xla_s_count_of_the_compiled_step():
    """The record's gflops divide XLA's cost analysis of one compiled step (no formula
    per layer type): for an MLP VAE about 6 FLOPs per matmul weight and example."""
    from jaxtrain.training.engine.precompile import precompile

    run = vae_run(eval_every=2)
    precompile(run, ArraySource(), 0, 8)
    kernels = sum(leaf.size for path, leaf in jax.tree_util.tree_flatten_with_path(
        jax.eval_shape(lambda: run.family.init(jax.random.PRNGKey(0), 2)))[0]
        if path[-1].key == "kernel")
    assert 0.9 < run.flops_per_example / (6 * kernels) < 2


# Keys the metric table does not know, scalars and not; only the numbers are written.
UNKNOWN = {"brand_new": 2.5, "test_brand_new": 0.25, "words": "x", "values": [1.0, 2.0],
           "flag": True}


class AddsUnknown(Callback):
    def on_eval(self, loop, record):
        return UNKNOWN


def test_every_number_of_the_record_reaches_tensorboard(tmp_path):
    """Writers take every number a record holds, whatever its name (training/metrics.py
    only documents them): a key METRICS lacks is in the event file as in metrics.jsonl;
    lists, strings and bools are not scalars; no tag has two points at one step."""
    assert not set(UNKNOWN) & set(METRICS)
    run = vae_run(eval_every=2)
    run_loop(Loop(run, tmp_path, run.init_state(), ArraySource(), 0, 4, {}),
             [TensorBoard("seed = 0"), Jsonl(), AddsUnknown()])
    events = [(t, step, v) for kind, t, step, v in read_events(tmp_path / "tb")
              if kind == "scalar"]
    points = collections.Counter((t, step) for t, step, _ in events)
    assert max(points.values()) == 1, points.most_common(3)
    scalars = {(t, step): v for t, step, v in events}
    for r in records(tmp_path):
        assert scalars["other/brand_new", r["step"]] == 2.5
        assert scalars["test/test_brand_new", r["step"]] == 0.25
        for k, v in r.items():
            if k == "writers_s" or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue  # writers_s: the seconds the writers took, after them
            assert (tag(k), r["step"]) in scalars, k
            if not k.startswith("train_") and k != "lr":  # those: each log's mean
                np.testing.assert_allclose(scalars[tag(k), r["step"]], v, rtol=1e-6)
    assert not {t.split("/")[1] for t, _ in scalars} & {"words", "values", "flag"}
