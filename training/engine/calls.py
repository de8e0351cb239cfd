"""--steps-per-call 0: S, the optimizer steps of one compiled call, chosen from the time
of a single step (the loop's `call_steps` says when S-step calls run)."""

import statistics
import time

import jax
import jax.numpy as jnp

from jaxtrain.training.engine.run import Run

CALL_SECONDS = 0.02  # --steps-per-call 0 fills calls of about this long ...
MAX_STEPS_PER_CALL = 32  # ... with at most this many steps (and batches in memory)


def steps_for(step_seconds: float, eval_every: int) -> int:
    """S for --steps-per-call 0: the steps that fill a call of CALL_SECONDS, within
    [1, MAX_STEPS_PER_CALL] and no more than the steps between evaluations."""
    return max(1, min(MAX_STEPS_PER_CALL, eval_every, round(CALL_SECONDS / step_seconds)))


def choose_steps_per_call(run: Run, state, batch, probes: int = 5) -> float:
    """--steps-per-call 0: sets the run's S (and its config's, which is saved with the
    run, so a resume keeps it) from the median of `probes` timed single steps after one
    that compiles; returns the seconds a step took. The steps run on a copy of `state`,
    which the jitted step would otherwise consume (donation): the run starts untouched."""
    if jax.process_count() > 1:  # each process would time its own S
        raise ValueError("--steps-per-call 0 (chosen from the step time) needs a run of one "
                         "process: pass a number of steps")
    probe = jax.device_put(jax.tree.map(jnp.copy, state), run.parallel.replicated)
    batch = run.parallel.put_batch(batch)
    probe, metrics = run.train_step(probe, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(probes):
        t0 = time.perf_counter()
        probe, metrics = run.train_step(probe, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    run.set_steps_per_call(steps_for(seconds, run.eval_every))
    return seconds
