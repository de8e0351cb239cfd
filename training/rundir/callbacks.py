"""The loop's features, one small callback each: progress, the guards (non-finite loss,
early stopping), images, checkpoints, the time to the first step and profiling. The
loop evaluates itself (training/engine/evaluate.py); the writers of the record (JSONL,
TensorBoard, curves, console) are in training/rundir/writers.py.
"""

import math
import time
from pathlib import Path

import jax
from tqdm import tqdm

from jaxtrain.training.engine.loop import Callback
from jaxtrain.training.engine.parallel import is_primary, local_copy, processes, say
from jaxtrain.training.engine.steps import run_keys
from jaxtrain.training.errors import Diverged
from jaxtrain.training.rundir import checkpoint
from jaxtrain.training.rundir.grids import make_grid, save_grid


class Announce(Callback):
    """The "training ..." line, once the loop's signal handlers are in place (so a
    SIGTERM after it always saves)."""

    def __init__(self, start, end, workdir):
        self.start, self.end, self.workdir = start, end, workdir

    def on_start(self, loop):
        run, train = loop.run, loop.run.config.train
        # The plan first: how long (epochs or steps), how big (parameters).
        length = (f"{train.epochs} epoch{'s' if train.epochs > 1 else ''} of "
                  f"{run.steps_per_epoch} steps ({run.total_steps:,} "
                  f"steps" if train.epochs else f"{run.total_steps:,} steps (")
        params = sum(x.size for x in jax.tree.leaves(loop.state.params))
        where = (f"from {run.where(self.start)} " if self.start else "") + \
            (f"to step {self.end}, " if self.end < run.total_steps or self.start else "")
        evaluating = (f"evaluating every {run.eval_every} steps" if run.eval_every < self.end
                      else "evaluating at the end")
        data, dataset = run.config.data, run.config.data.dataset
        if data.is_text:  # its tokenizer, and how many tokens it has
            name = data.tokenizer if data.tokenizer in ("char", "bpe") else \
                Path(data.tokenizer).name
            dataset += f" ({name} tokenizer, {run.config.model_config.vocab_size:,} tokens)"
        say(f"training {run.config.model} on {dataset}: {length}"
            f"{', ' if train.epochs else ''}batch {train.batch_size}), {params:,} parameters; "
            f"{where}{evaluating}, workdir {self.workdir}"
            + processes()
            + (f", {run.parallel.devices} devices" if run.parallel.devices > 1 else "")
            + f", {jax.default_backend()} {run.config.train.precision}"
            + (f", {run.family.attention} attention" if run.family.attention else ""))


class Progress(Callback):
    """A tqdm bar per evaluation period, counting tokens (sequence models) or examples,
    so its rate reads tokens/s; the loss appears at each log (no extra host read)."""

    def __init__(self):
        self.bar = None

    def on_step(self, loop):
        if self.bar is None:
            family = loop.run.family
            self.per_step = loop.run.config.train.batch_size * (family.tokens_per_example or 1)
            end, self.shown = loop.period_end, loop.period_start
            self.bar = tqdm(total=(end - loop.period_start) * self.per_step,
                            unit="tok" if family.tokens_per_example else "img",
                            unit_scale=True, leave=False,
                            desc=f"steps {loop.period_start}-{end}",
                            disable=None if is_primary() else True)
        self.bar.update((loop.step - self.shown) * self.per_step)  # 1 or S steps a call
        self.shown = loop.step

    def on_log(self, loop, metrics):
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{metrics['train_loss']:.3g}")

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_eval(self, loop, record):
        self._close()

    def on_interrupt(self, loop):
        self._close()

    def on_end(self, loop):
        self._close()


class NonFinite(Callback):
    """Stops a diverging run at the host reads the loop already makes (each log and each
    evaluation), before anything of the diverged state is saved."""

    def __init__(self, manager):
        self.manager = manager

    def _check(self, loop, name, value, since):
        if math.isfinite(value):
            return
        self.manager.wait_until_finished()
        last = self.manager.latest_step()
        workdir = loop.workdir
        kept = (f"the last good checkpoint is step {last} in {workdir / 'checkpoints'}; "
                f"continue from it with a lower rate: jaxtrain resume --workdir {workdir} "
                f"--lr {loop.run.config.train.lr / 10:g}"
                if last is not None else "no checkpoint was saved; start again with "
                "`jaxtrain fit --overwrite` and a lower --lr")
        raise Diverged(f"{name} is {value} between steps {since} and {loop.step}: stopped "
                       f"without saving the diverged state; {kept} (or a smaller --grad-clip)")

    def on_log(self, loop, metrics):
        self._check(loop, "the train loss", metrics["train_loss"], loop.log_start)

    def on_eval(self, loop, record):
        self._check(loop, "the test loss", record["test_loss"], loop.period_start)


class EarlyStopping(Callback):
    """Ends the run after `patience` evaluations without a better test loss. Its state
    travels in the checkpoint's position, so a resumed run counts on."""

    def __init__(self, patience: int):
        self.patience = patience

    def on_eval(self, loop, record):
        best = loop.position.get("best_test_loss")
        if best is None or record["test_loss"] < best:
            loop.position.update(best_test_loss=record["test_loss"], best_step=loop.step,
                                 evals_since_best=0)
        else:
            loop.position["evals_since_best"] = loop.position.get("evals_since_best", 0) + 1
        if self.patience and loop.position["evals_since_best"] >= self.patience \
                and loop.step < loop.run.total_steps:
            loop.position["stopped_early"] = True
            loop.stop_reason = (f"stopped early: no better test loss in {self.patience} "
                                f"evaluations (best {loop.position['best_test_loss']:.4g} at "
                                f"step {loop.position['best_step']})")
            return {"stopped_early": True}


class Samples(Callback):
    """What the family draws at each evaluation from the run's fixed sampling key: its
    PNG grids and (text runs) a generated text, into loop.artifacts, where TensorBoard
    finds them; the grids are written with the record, named by epoch for epoch runs
    (samples_epoch003.png), else by step. The text only for TensorBoard (`text`). The
    drawing's seconds: samples_s."""

    def __init__(self, text: bool = True):
        self.text = text

    def on_eval(self, loop, record):
        if not is_primary():
            return
        t, run = time.perf_counter(), loop.run
        params, key = local_copy(loop.state.ema_params), run_keys(run.config.train.seed)["sample"]
        grids = run.family.epoch_images(params, key, loop.source.preview())
        for name, (images, cols) in grids.items():
            # The samples grid has one row per class (models/family.py).
            loop.artifacts.setdefault("images", {})[name] = make_grid(
                images, cols, row_names=run.config.data.labels if name == "samples"
                else None)
        text = run.family.epoch_text(params, key) if self.text else None
        if text is not None:
            loop.artifacts["text"] = text
        return {"samples_s": time.perf_counter() - t}

    def on_record(self, loop, record):
        run, step = loop.run, loop.step
        if run.steps_per_epoch and step % run.steps_per_epoch == 0:
            suffix = f"epoch{step // run.steps_per_epoch:03d}"
        else:
            suffix = f"step{step:07d}"
        for name, grid in loop.artifacts.get("images", {}).items():
            save_grid(grid, loop.workdir / f"{name}_{suffix}.png")


class Checkpoint(Callback):
    """An async Orbax save at each evaluation (with the test loss, so the best is kept)
    and on interruption; waits for the last write at the end."""

    def __init__(self, manager):
        self.manager = manager

    def on_save(self, loop, record):
        t = time.perf_counter()
        checkpoint.save(self.manager, loop.state, loop.position_at(loop.step),
                        loop.run.config, metrics={"test_loss": record["test_loss"]})
        return {"save_s": time.perf_counter() - t}  # the blocking part of the async save

    def on_interrupt(self, loop):
        checkpoint.save(self.manager, loop.state, loop.position_at(loop.step), loop.run.config)
        self.manager.wait_until_finished()

    def on_end(self, loop):
        self.manager.wait_until_finished()


class Profile(Callback):
    """A jax.profiler trace of steps [first, last) into <workdir>/profile/, viewable in
    TensorBoard's profile plugin or Perfetto; with --steps-per-call S, from the first call
    that starts at or after `first` to the first that ends at or after `last`."""

    def __init__(self, first: int, last: int):
        self.first, self.last, self.active, self.done = first, last, False, False

    def _begin(self, loop):
        self.folder = loop.workdir / "profile"
        jax.profiler.start_trace(str(self.folder))
        self.active, self.began = True, loop.step

    def on_start(self, loop):
        self.on_step(loop)

    def on_step(self, loop):
        if not self.active and not self.done and is_primary() and loop.step >= self.first:
            self._begin(loop)
        elif self.active and loop.step >= self.last:
            self._finish(loop)

    def _finish(self, loop):
        jax.block_until_ready(loop.state)
        jax.profiler.stop_trace()
        self.active, self.done = False, True
        say(f"profile of steps {self.began}-{loop.step} written to {self.folder} (open it "
            f"with `tensorboard --logdir {self.folder}` or ui.perfetto.dev)")

    def on_end(self, loop):
        if self.active:
            self._finish(loop)
