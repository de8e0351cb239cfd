"""A run's first programs compiled in the background while its start goes on.

The main thread initializes the state (a compile of its own) while a thread lowers the
first training call and the evaluation (then, for a run of S-step calls, the single
step its periods end with) from abstract shapes and compiles them (XLA
compiles without holding Python's lock, so two compiles use two cores). JAX keeps what
the thread traced and compiled in memory, so the main thread's first call of each
program neither traces nor compiles again (and the persistent compilation cache gets
them, as usual). The start line names these programs "(background)". Runs of several
processes compile in the main thread, in step with each other.

A failure here is left to the main thread: it compiles the same program at its first
call and meets the same error there, where the command reports it.
"""

import threading

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


class Precompile:
    """Starts compiling at once; `wait()` before the first training call (the
    evaluation's compile may go on during the first period: should the first
    evaluation come before it ends, the main thread compiles the program too)."""

    def __init__(self, run: Run, source: Source, start: int, eval_batch_size: int):
        self.names: list[str] = []  # the programs compiled here
        self.trained, self.done = threading.Event(), threading.Event()
        if jax.process_count() > 1:
            self.trained.set()
            self.done.set()
            return
        # Read here, in the main thread: sources are not meant for two threads.
        self.train_batch = next(source.train_batches(start))
        self.eval_batch = next(iter(source.eval_batches(eval_batch_size)))
        self.run, self.start = run, start
        threading.Thread(target=self._compile, name="jaxtrain-precompile", daemon=True).start()

    def _first_call_steps(self) -> int:
        """The steps of the run's first call, as the loop will count them."""
        loop = Loop(self.run, None, None, None, self.start, self.run.total_steps, {},
                    step=self.start, period_start=self.start)
        return loop.call_steps()

    def _single_steps_later(self, s: int) -> bool:
        """Whether a run of S-step calls also runs single steps: the last (period mod S)
        steps before an evaluation or the end (Loop.call_steps)."""
        every, total = self.run.eval_every, self.run.total_steps
        return bool(every % s or (total - self.start) % every % s or self.start % every % s)

    def _compile(self):
        run, parallel = self.run, self.run.parallel
        try:
            state = run.abstract_state()
            s = self._first_call_steps()
            if s > 1:
                step, batch = run.train_steps, _abstract(self.train_batch, parallel.stacked, s)
            else:
                step, batch = run.train_step, _abstract(self.train_batch, parallel.batch)
            lowered = step.lower(state, batch)
            lowered.compile()
            self.names.append(step.__name__)
            single = lowered if s == 1 else run.train_step.lower(
                state, _abstract(self.train_batch, parallel.batch))
            # XLA's count of one step's FLOPs (a scan's body would count once, so the
            # single step's), for the record's gflops: no formula per layer type. Set
            # before the first timed call can end.
            flops = (single.cost_analysis() or {}).get("flops")
            if flops:
                run.flops_per_example = flops / len(jax.tree.leaves(self.train_batch)[0])
            self.trained.set()
            key = run_keys(run.config.train.seed)["eval"]
            run.eval_step.lower(state.ema_params, _abstract(self.eval_batch, parallel.batch),
                                key).compile()
            self.names.append(run.eval_step.__name__)
            if s > 1 and self._single_steps_later(s):  # a period's last steps, one by one
                single.compile()
                self.names.append(run.train_step.__name__)
        except Exception:  # noqa: BLE001 (the main thread's own compile reports it)
            pass
        finally:
            self.trained.set()
            self.done.set()

    def wait(self, everything: bool = False) -> list[str]:
        """Waits for the training program (`everything`: and the evaluation's, so that
        timed steps have the cores to themselves); returns the names of the programs
        compiled here so far."""
        (self.done if everything else self.trained).wait()
        return list(self.names)
