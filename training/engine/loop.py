"""The training loop: runs jitted steps and calls callbacks at their cadence.

Hooks, in the order they fire (see training/rundir/callbacks.py for the callbacks themselves):
  on_start(loop)            once, before the first step
  on_step(loop)             after every call of the step program (one step, or S with
                            --steps-per-call S); no host read (dispatch runs ahead)
  on_log(loop, metrics)     every `log_every` steps (at the first call that reaches a
                            multiple) and before each evaluation: the train
                            metrics since the last log, read to the host in one sync
  every `eval_every` steps and at the end, the loop first evaluates (training/engine/
  evaluate.py) and builds the period's record: train metrics, speed, test metrics (and
  at the run's end the --final-eval measures). Then, in three phases:
  on_eval(loop, record)     the guards and decisions (a diverged loss, early stopping,
                            the images to draw); may stop the run or raise
  on_save(loop, record)     the checkpoint, which keeps what on_eval decided
  on_record(loop, record)   the writers (TensorBoard, PNGs, console), then the ones that
                            keep the record (JSONL, which also holds writers_s; curves)
  on_interrupt(loop)        on the first SIGINT/SIGTERM, between two calls
  on_end(loop)              always, last (closes writers, waits for checkpoints)
on_eval and on_save see the record read-only and may return keys to add (a stop, the
save's seconds): each sees the loop's record, never another callback's additions, so
the order of the callbacks within a phase does not matter. A callback stops the run
early by setting `loop.stop_reason`.
"""

import dataclasses
import signal
import threading
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import jax
import numpy as np
from jax.experimental.multihost_utils import reached_preemption_sync_point

from jaxtrain.training.engine.evaluate import evaluate_record
from jaxtrain.training.engine.run import Run
from jaxtrain.training.errors import Interrupted
from jaxtrain.training.host.signals import GUARD
from jaxtrain.training.metrics import METRICS
from jaxtrain.training.sources.base import Source


class Callback:
    """A feature hung off the loop; override the hooks it needs."""

    keeps_record = False  # True: its on_record comes after the other writers'

    def on_start(self, loop: "Loop") -> None: ...
    def on_step(self, loop: "Loop") -> None: ...
    def on_log(self, loop: "Loop", metrics: dict) -> None: ...
    def on_eval(self, loop: "Loop", record: Mapping) -> dict | None: ...
    def on_save(self, loop: "Loop", record: Mapping) -> dict | None: ...
    def on_record(self, loop: "Loop", record: dict) -> None: ...
    def on_interrupt(self, loop: "Loop") -> None: ...
    def on_end(self, loop: "Loop") -> None: ...


class StopOnSignal:
    """The first SIGINT/SIGTERM while the loop runs becomes a flag (`signum`) it checks
    after each call. In a command, the process's guard (training/host/signals.py) holds
    the flag and ends the process on any later signal, once a save in flight is done;
    elsewhere (a benchmark, a test calling the trainer) a second signal raises
    KeyboardInterrupt."""

    def __init__(self):
        self._signum = None
        self.calls = 0  # of the step, since the loop began

    @property
    def signum(self):
        return GUARD.signum if GUARD.installed else self._signum

    def after_call(self):
        """The signal to stop at after this call of the step, or None. Several processes
        must stop at the same call, or the save (a collective) waits forever: there JAX's
        preemption notifier holds SIGTERM (jax.distributed installs it over ours), tells
        every process, and names the call at which all of them stop."""
        self.calls += 1
        if jax.process_count() > 1 and reached_preemption_sync_point(self.calls):
            return signal.SIGTERM
        return self.signum

    def _handle(self, signum, frame):
        if self._signum is not None:
            raise KeyboardInterrupt
        self._signum = signum

    def __enter__(self):
        self._old = {}
        if GUARD.installed:
            GUARD.signum, GUARD.loop_running = None, True
        elif threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle)
                         for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        if GUARD.installed:
            GUARD.loop_running = False
        else:
            for s, handler in self._old.items():
                signal.signal(s, handler)


@dataclasses.dataclass
class Loop:
    """The state of a training loop that callbacks read (and a few of them write)."""

    run: Run
    workdir: Path
    state: Any
    source: Source  # training/sources/base.py
    start: int  # the step training (re)starts from
    end: int  # the step it stops at
    # Saved with each checkpoint beside the step: where the data continues, and what
    # callbacks need to carry over a resume (early stopping's best loss).
    position: dict
    step: int = 0
    stop_reason: str | None = None  # set by a callback to end the run early
    artifacts: dict = dataclasses.field(default_factory=dict)  # this evaluation's grids
    period_start: int = 0  # first step of the current evaluation period
    log_start: int = 0  # first step since the last on_log
    peak_gflops: float | None = None  # the device's peak, for the record's mfu

    @property
    def period_end(self) -> int:
        """The step of the next evaluation: the next multiple of eval_every, or the end."""
        every = self.run.eval_every
        return min(self.end, (self.period_start // every + 1) * every)

    def call_steps(self) -> int:
        """Steps the next call runs: S (--steps-per-call) when S steps fit before the next
        evaluation, else 1. Counted from the evaluation period's first step, so calls
        start at the same steps whatever step a run resumes from, and only the period's
        last (eval_every mod S) steps run one by one: two programs, not one per length."""
        s, every = self.run.steps_per_call, self.run.eval_every
        offset = self.step % every
        return s if s > 1 and offset % s == 0 and self.step + s <= self.period_end else 1

    def position_at(self, step: int) -> dict:
        return {**self.position, "step": step, "steps_per_epoch": self.run.steps_per_epoch}


def per_step(host: list) -> list:
    """Host metrics of single steps (scalars) and of S-step calls (stacked [S]) -> one
    dict a step."""
    out = []
    for metrics in host:
        if np.ndim(metrics["train_loss"]):
            out.extend({k: v[i] for k, v in metrics.items()}
                       for i in range(len(metrics["train_loss"])))
        else:
            out.append(metrics)
    return out


def mean_metrics(host: list) -> dict:
    """The step metrics of a list of host dicts: their means, or the last value of a
    metric marked `last` (the learning rate)."""
    return {k: float(host[-1][k]) if k in METRICS and METRICS[k].last
            else float(np.mean([m[k] for m in host])) for k in host[0]}


def run_loop(loop: Loop, callbacks: list[Callback]) -> Any:
    """Trains from loop.start to loop.end; returns the final state. Raises Interrupted on
    SIGINT/SIGTERM (after the callbacks' on_interrupt, which save), and whatever a
    callback raises (a diverged loss) after the on_end hooks ran."""
    run, train = loop.run, loop.run.config.train
    loop.step = loop.period_start = loop.log_start = loop.start
    batches = loop.source.train_batches(loop.start)
    # Device metrics since the last log (an S-step call's stacked [S]); host ones of this
    # period, one dict a step.
    pending, period_host = [], []
    times = {"t0": time.perf_counter(), "data": 0.0}

    def log():
        nonlocal pending
        if pending:
            host = per_step(jax.device_get(pending))  # the one sync of a log period
            period_host.extend(host)
            metrics = mean_metrics(host)
            pending = []
            for cb in callbacks:
                cb.on_log(loop, metrics)
            loop.log_start = loop.step

    try:
        with StopOnSignal() as stop:
            for cb in callbacks:
                cb.on_start(loop)
            # The first period's clock starts after on_start, at the first call.
            times = {"t0": time.perf_counter(), "data": 0.0}
            while loop.step < loop.end and loop.stop_reason is None:
                n = loop.call_steps()
                t_data = time.perf_counter()
                if n == 1:
                    batch = run.parallel.put_batch(next(batches))
                else:
                    chunk = [next(batches) for _ in range(n)]
                    batch = run.parallel.put_batch(
                        jax.tree.map(lambda *x: np.stack(x), *chunk), stacked=True)
                times["data"] += time.perf_counter() - t_data
                step_fn = run.train_step if n == 1 else run.train_steps
                loop.state, metrics = step_fn(loop.state, batch)
                pending.append(metrics)
                loop.step += n
                for cb in callbacks:
                    cb.on_step(loop)
                if loop.step // train.log_every > (loop.step - n) // train.log_every:
                    log()
                if (signum := stop.after_call()) is not None:
                    log()  # the NaN check runs before anything is saved
                    for cb in callbacks:
                        cb.on_interrupt(loop)
                    raise _interrupted(loop, signum)
                if loop.step == loop.period_end:
                    log()
                    jax.block_until_ready(loop.state)
                    train_s = time.perf_counter() - times["t0"]
                    record = {"step": loop.step, **run.epoch_of(loop.step),
                              **_train_record(run, period_host, train_s, times["data"],
                                              loop.peak_gflops),
                              **evaluate_record(run, loop.state.ema_params, loop.source,
                                                final=loop.step == run.total_steps)}
                    loop.artifacts = {}
                    for phase in ("on_eval", "on_save"):
                        view = MappingProxyType(record)
                        added = [getattr(cb, phase)(loop, view) for cb in callbacks]
                        for more in added:
                            record.update(more or {})
                    record["period_s"] = time.perf_counter() - times["t0"]
                    _write(loop, record, callbacks)
                    period_host = []
                    times = {"t0": time.perf_counter(), "data": 0.0}
                    loop.period_start = loop.step
            if stop.signum is not None:  # it came during the last period's evaluation
                raise _interrupted(loop, stop.signum)
    finally:
        for cb in callbacks:
            cb.on_end(loop)
    return loop.state


def _interrupted(loop: Loop, signum: int) -> Interrupted:
    """What the command says when a signal ended the loop; its last checkpoint is saved."""
    name, where, workdir = signal.Signals(signum).name, loop.run.where(loop.step), loop.workdir
    if loop.step == loop.run.total_steps:
        return Interrupted(f"{name}: the run had finished: saved {where} in {workdir}",
                           128 + signum)
    return Interrupted(f"{name}: saved {where} in {workdir}; continue with: jaxtrain resume "
                       f"--workdir {workdir}", 128 + signum)


def _write(loop: Loop, record: dict, callbacks: list[Callback]) -> None:
    """on_record: the callbacks that keep the record (`keeps_record`: metrics.jsonl, then
    curves.png drawn from it, in the list's order) come last, so it holds writers_s,
    the seconds the other writers took, and a writer that fails does not lose it. A
    signal's exit waits for it (GUARD.busy)."""
    with GUARD.busy:
        _write_record(loop, record, callbacks)


def _write_record(loop: Loop, record: dict, callbacks: list[Callback]) -> None:
    t = time.perf_counter()
    try:
        for cb in callbacks:
            if not cb.keeps_record:
                cb.on_record(loop, record)
    finally:  # a writer that fails (a full disk) does not cost the record
        record["writers_s"] = time.perf_counter() - t
        for cb in callbacks:
            if cb.keeps_record:
                cb.on_record(loop, record)


def _train_record(run: Run, host: list, train_s: float, data_s: float,
                  peak_gflops: float | None = None) -> dict:
    """The period's train metrics (training/metrics.py) and its throughput."""
    if not host:
        return {}
    out = mean_metrics(host)
    family, examples = run.family, len(host) * run.config.train.batch_size
    out.update(train_steps=len(host), samples_per_s=examples / train_s)
    if run.flops_per_example:  # XLA's count, once the step is compiled (engine/precompile.py)
        out["gflops"] = examples * run.flops_per_example / train_s / 1e9
    out.update(train_s=train_s, data_s=data_s)
    if family.tokens_per_example:
        out["tokens_per_s"] = out["samples_per_s"] * family.tokens_per_example
    if peak_gflops and "gflops" in out:
        out["mfu"] = out["gflops"] / peak_gflops
    return out
