"""TrainState with a parameter EMA, the optimizer and its schedule, and the jitted steps.

The steps are pure: `train_step(state, batch) -> (state, metrics)` and
`eval_step(params, batch, rng) -> sums`. The model family supplies the losses; the
hyperparameters are bound by closure, so each step compiles once.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from jaxtrain.training.config import TrainConfig


class TrainState(train_state.TrainState):
    """Flax's TrainState plus the EMA of the parameters and the run's base PRNG key."""

    ema_params: Any
    rng: jax.Array  # raw uint32 key [2]; per-step keys are fold_in(rng, step)


def make_schedule(train: TrainConfig, total_steps: int):
    """Linear warmup from lr/100 to lr, then cosine decay to lr/100 at total_steps."""
    if train.warmup_steps >= total_steps:
        raise ValueError(f"--warmup-steps {train.warmup_steps} must be smaller than the run's "
                         f"{total_steps} total steps: lower --warmup-steps or train longer")
    return optax.warmup_cosine_decay_schedule(
        init_value=train.lr / 100, peak_value=train.lr, warmup_steps=train.warmup_steps,
        decay_steps=total_steps, end_value=train.lr / 100)


def make_optimizer(train: TrainConfig, schedule):
    return optax.chain(optax.clip_by_global_norm(train.grad_clip),
                       optax.adamw(schedule, weight_decay=train.weight_decay))


def run_keys(seed: int) -> dict:
    """The run's independent key streams, all derived from the one seed."""
    init, train, eval_, sample = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"init": init, "train": train, "eval": eval_, "sample": sample}


def create_state(family, train: TrainConfig, tx) -> TrainState:
    keys = run_keys(train.seed)
    params = family.init(keys["init"], train.batch_size)
    state = TrainState.create(apply_fn=family.model.apply, params=params, tx=tx,
                              # a copy: the step donates the state, and two leaves
                              # sharing one buffer cannot both be donated
                              ema_params=jax.tree.map(jnp.copy, params), rng=keys["train"])
    # create() leaves step a Python int (weakly typed); the step returns an int32 array,
    # and that change of type would compile the step a second time.
    return state.replace(step=jnp.zeros((), jnp.int32))


def ema_decay_at(step, decay):
    """The EMA's decay at `step`, ramped up as (1 + t) / (10 + t) so early averages are
    not dominated by the random initialisation."""
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_ema(ema_params, params, decay):
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


def make_train_step(family, schedule, ema_decay, parallel=None, accumulate=1):
    """One jitted optimizer step; `state` is donated, so the caller must not reuse it.
    With `accumulate` K > 1, the batch is split into K micro-batches whose gradients are
    averaged before the one update (see accumulated_grads). With a
    `parallel.DataParallel`, the batch is split over its mesh and the state and metrics
    are replicated."""
    grad_fn = jax.value_and_grad(family.train_loss, has_aux=True)

    def train_step(state, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        # Each example's row in the whole batch keys its noise (models/family.py), so the
        # micro-batches of an accumulated step draw what the whole batch would.
        rows = jax.tree.leaves(batch)[0].shape[0]
        batch = {**batch, "row": jnp.arange(rows, dtype=jnp.int32)}
        if accumulate == 1:
            (loss, metrics), grads = grad_fn(state.params, batch, rng)
        else:
            loss, metrics, grads = accumulated_grads(grad_fn, state.params, batch, rng,
                                                     accumulate)
        new_state = state.apply_gradients(grads=grads)
        # A Polyak average of the parameters themselves. optax.ema inside the optimizer
        # chain would average the *updates* (gradient directions), which is not the same.
        ema = update_ema(state.ema_params, new_state.params, ema_decay_at(state.step, ema_decay))
        metrics = {"loss": loss, **metrics, "grad_norm": optax.global_norm(grads),
                   "lr": schedule(state.step)}
        return new_state.replace(ema_params=ema), metrics

    shardings = {} if parallel is None else {
        "in_shardings": (parallel.replicated, parallel.batch),
        "out_shardings": (parallel.replicated, parallel.replicated)}
    return jax.jit(train_step, donate_argnums=0, **shardings)


def accumulated_grads(grad_fn, params, batch, rng, k):
    """The mean loss, metrics and gradients of `batch` [B, ...] computed as K micro-batches
    of B / K rows, one after another in a lax.scan, so only one micro-batch's activations
    are alive at a time. Micro-batch m takes rows m, m + K, m + 2K, ...: a reshape that
    keeps each device's rows on that device under data parallelism.

    Why not optax.MultiSteps: it makes each micro-batch an optimizer call of its own, so
    the state's step, the schedule, the EMA, the data position and resume would count
    micro-batches, each a separate dispatch, and its accumulator would change the
    checkpoint's structure with K. Here a step stays a step."""

    def split(x):  # [B, ...] -> [K, B / K, ...]
        return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)

    def body(grad_sum, micro):
        (loss, metrics), grads = grad_fn(params, micro, rng)
        return jax.tree.map(jnp.add, grad_sum, grads), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, params)
    grad_sum, (losses, metrics) = jax.lax.scan(body, zeros, jax.tree.map(split, batch))
    # Every micro-batch has B / K examples, so the mean of their means is the batch mean.
    mean = functools.partial(jnp.mean, axis=0)
    return mean(losses), jax.tree.map(mean, metrics), jax.tree.map(lambda g: g / k, grad_sum)


def make_eval_step(family, parallel=None):
    """Jitted sums of the family's eval metrics over one (masked) batch."""
    shardings = {} if parallel is None else {
        "in_shardings": (parallel.replicated, parallel.batch, parallel.replicated),
        "out_shardings": parallel.replicated}
    return jax.jit(family.eval_sums, **shardings)
