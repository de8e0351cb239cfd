"""A run's first programs compiled before its first call, from abstract shapes.

The first training call's program and the evaluation's (and, for a run of S-step calls,
the single step its periods end with) are lowered and compiled here, so the record
counts their compile apart from the steps and XLA's count of a step's FLOPs is known
before the first timed call. JAX keeps what was compiled in memory, so the first call
of each program neither traces nor compiles again (and the persistent compilation cache
gets them, as usual).

Until 2026-12-03 a thread compiled them while the main thread initialized the state.
Measured on 2 cores (benchmarks/results/workarounds.md, cold whole commands), it bought
nothing: a 20-step VAE fit took 19.7 s with the thread and 19.5 s without, a 20-step
baby GPT 24.9 s with it and 21.1 s without, and each peaked 100-200 MB higher. Two
compiles at once on two cores took as long as one after the other. So they run here,
in order.

A failure here is left to the first call, which compiles the same program and meets
the same error there, where the command reports it.
"""

import jax
import numpy as np

from jaxtrain.training.engine.loop import Loop
from jaxtrain.training.engine.run import Run
from jaxtrain.training.engine.steps import run_keys
from jaxtrain.training.sources.base import Source


def _abstract(batch: dict, sharding, stack: int = 0) -> dict:
    """Host arrays -> their shapes on the devices (S of them stacked, with `stack` S)."""
    lead = (stack,) if stack else ()
    return {k: jax.ShapeDtypeStruct(lead + np.shape(v), np.asarray(v).dtype, sharding=sharding)
            for k, v in batch.items()}


def precompile(run: Run, source: Source, start: int, eval_batch_size: int) -> None:
    """Compiles the run's first programs (runs of several processes compile them at
    their first call instead, in step with each other)."""
    if jax.process_count() > 1:
        return
    train_batch = next(source.train_batches(start))
    eval_batch = next(iter(source.eval_batches(eval_batch_size)))
    parallel = run.parallel
    try:
        state = run.abstract_state()
        s = _first_call_steps(run, start)
        if s > 1:
            step, batch = run.train_steps, _abstract(train_batch, parallel.stacked, s)
        else:
            step, batch = run.train_step, _abstract(train_batch, parallel.batch)
        lowered = step.lower(state, batch)
        lowered.compile()
        single = lowered if s == 1 else run.train_step.lower(
            state, _abstract(train_batch, parallel.batch))
        # XLA's count of one step's FLOPs (a scan's body would count once, so the single
        # step's), for the record's gflops: no formula per layer type.
        flops = (single.cost_analysis() or {}).get("flops")
        if flops:
            run.flops_per_example = flops / len(jax.tree.leaves(train_batch)[0])
        key = run_keys(run.config.train.seed)["eval"]
        run.eval_step.lower(state.ema_params, _abstract(eval_batch, parallel.batch),
                            key).compile()
        if s > 1 and _single_steps_later(run, start, s):  # a period's last steps, one by one
            single.compile()
    except Exception:  # noqa: BLE001 (the first call compiles again and reports it)
        pass


def _first_call_steps(run: Run, start: int) -> int:
    """The steps of the run's first call, as the loop will count them."""
    loop = Loop(run, None, None, None, start, run.total_steps, {}, step=start,
                period_start=start)
    return loop.call_steps()


def _single_steps_later(run: Run, start: int, s: int) -> bool:
    """Whether a run of S-step calls also runs single steps: the last (period mod S)
    steps before an evaluation or the end (Loop.call_steps)."""
    every, total = run.eval_every, run.total_steps
    return bool(every % s or (total - start) % every % s or start % every % s)
