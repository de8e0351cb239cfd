"""A run assembled from its config: the model family, the data, the schedule and
optimizer, the jitted steps, and evaluation. The loop (training/loop.py) drives it.
"""

import dataclasses
import functools
import math
import statistics
import time

import jax
import jax.numpy as jnp

from jaxtrain.training.config import RunConfig
from jaxtrain.training.parallel import DataParallel
from jaxtrain.training.steps import (
    create_state,
    make_eval_step,
    make_optimizer,
    make_schedule,
    make_train_step,
    param_shapes,
    run_keys,
    trainable_mask,
)
from jaxtrain.training.text import TextSource

IMAGE_DIMS = 784  # pixels of a 28x28 image


class Run:
    """Everything built from a RunConfig and the data's steps per epoch (None for text)."""

    def __init__(self, config: RunConfig, steps_per_epoch: int | None, devices: int | None = 1):
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        train = config.train
        self.parallel = DataParallel(devices)
        self.parallel.check_batch_size(train.batch_size, train.accumulate)
        self.total_steps = train.steps or train.epochs * steps_per_epoch
        self.eval_every = train.eval_every or steps_per_epoch or 250
        self.family = config.family()
        self.schedule = make_schedule(train, self.total_steps)
        # A pytree of bools like the params (False: frozen), or None when all train.
        self.trainable = None if not train.freeze else trainable_mask(
            param_shapes(self.family), train.freeze)
        self.tx = make_optimizer(train, self.schedule, self.trainable)
        # Built once per run, so each compiles once.
        self.train_step = make_train_step(self.family, self.schedule, train.ema_decay,
                                          self.parallel, train.accumulate, self.trainable)
        # 0 (automatic): single steps until fit has chosen S (choose_steps_per_call).
        self.set_steps_per_call(train.steps_per_call or 1, save=bool(train.steps_per_call))
        self.eval_step = make_eval_step(self.family, self.parallel)

    def set_steps_per_call(self, s: int, save: bool = True):
        """S steps in one call (training/loop.py:Loop.call_steps says when it is used);
        with `save`, S goes into the config saved with the run."""
        if s > self.eval_every:
            raise ValueError(f"--steps-per-call {s} is more than the {self.eval_every} steps "
                             "between evaluations: lower it")
        train = self.config.train
        if save:
            self.config = dataclasses.replace(
                self.config, train=dataclasses.replace(train, steps_per_call=s))
        self.steps_per_call = s
        self.train_steps = None if s == 1 else make_train_step(
            self.family, self.schedule, train.ema_decay, self.parallel, train.accumulate,
            self.trainable, s)

    def init_state(self, start=None):
        """The state at step 0; `start` = (params, ema_params) to fine-tune from."""
        state = create_state(self.family, self.config.train, self.tx, start)
        return jax.device_put(state, self.parallel.replicated)

    def abstract_state(self):
        """The restore target: the state's shapes, replicated on this run's devices."""
        return self.parallel.abstract(
            jax.eval_shape(lambda: create_state(self.family, self.config.train, self.tx)))

    def where(self, step: int) -> str:
        """'step 936/4680 (epoch 2/10)', or 'step 250/2000' for a text run."""
        text = f"step {step}/{self.total_steps}"
        if self.steps_per_epoch and self.config.train.epochs:
            epoch = step / self.steps_per_epoch
            shown = f"{epoch:.0f}" if epoch == int(epoch) else f"{epoch:.2f}"
            text += f" (epoch {shown}/{self.config.train.epochs})"
        return text

    def epoch_of(self, step: int) -> dict:
        """{"epoch": e} for runs measured in epochs (a float mid-epoch), else {}."""
        if not self.steps_per_epoch:
            return {}
        epoch = step / self.steps_per_epoch
        return {"epoch": int(epoch) if epoch.is_integer() else epoch}


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


def restore_target(config, position, devices=1):
    """make_target for checkpoint.restore: the abstract state of the saved run."""
    return Run(config, position["steps_per_epoch"], devices).abstract_state()


def open_source(config: RunConfig):
    """The run's data: images by epoch, or text windows by step."""
    if config.data.is_text:
        return TextSource(config.data.data_file, config.data.vocab, config.model_config.context,
                          config.train.batch_size, config.train.seed)
    # torch and torchvision (about 4 s to import) are needed only to read images, so
    # sampling and text runs do without them.
    from jaxtrain.training import data

    return data.ImageSource(config.data.dataset, config.data.data_dir, config.data.download,
                            config.train.batch_size, config.train.seed,
                            config.data.test_fraction)


def evaluate(run: Run, params, source) -> dict:
    """Mean test metrics over every test example (or fixed text window) exactly once.
    A family that draws noise in evaluation (the VAE's z) draws it per test example from
    the one eval key, so the figure does not depend on the batch size."""
    key = run_keys(run.config.train.seed)["eval"]
    sums = None
    for batch in source.eval_batches():
        s = run.eval_step(params, run.parallel.put_batch(batch), key)
        sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
    sums = jax.device_get(sums)
    count = sums.pop("count")
    return run.family.finalize({k: float(v / count) for k, v in sums.items()})


def evaluate_iw(run: Run, params, source, samples: int, chunk_images: int = 16384) -> dict:
    """The importance-weighted estimate of -log p(x | c) (models/vae.py:iw_sums) with
    `samples` samples, averaged over every test image: {"iw_nll" (nats/image),
    "iw_bits_per_dim", "iw_samples"}. About `chunk_images` decoded images are in memory
    at a time."""
    family = run.family
    if not hasattr(family, "iw_sums"):
        raise ValueError(f"the importance-weighted likelihood applies to VAE runs, not to a "
                         f"{run.config.model} run (whose test loss is already an exact NLL)")
    chunk = max(1, min(samples, chunk_images // run.config.train.batch_size))
    step = jax.jit(functools.partial(family.iw_sums, samples=samples, chunk=chunk))
    # A key of its own: the IW samples are not the ELBO's z.
    key = jax.random.fold_in(run_keys(run.config.train.seed)["eval"], 1)
    sums = None
    for batch in source.eval_batches():
        s = step(params, run.parallel.put_batch(batch), key)
        sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
    sums = jax.device_get(sums)
    nll = float(sums["iw_nll"] / sums["count"])
    return {"iw_nll": nll, "iw_bits_per_dim": nll / (IMAGE_DIMS * math.log(2)),
            "iw_samples": samples}


def describe(metrics: dict) -> str:
    """'test loss 237.93 (recon 225.71, kl 12.22)': the test loss and its companions."""
    rest = ", ".join(f"{k} {v:.2f}" if abs(v) >= 10 else f"{k} {v:.4g}"
                     for k, v in metrics.items() if k != "test_loss")
    return f"test loss {metrics['test_loss']:.2f}" + (f" ({rest})" if rest else "")
