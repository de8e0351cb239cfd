"""TrainState with a parameter EMA, the trainable mask of --freeze, and the jitted steps
(the optimizer and its schedule: training/engine/optimizer.py).

The steps are pure: `train_step(state, batch) -> (state, metrics)` and
`eval_step(params, batch, rng) -> sums`. The model family supplies the losses; the
hyperparameters are bound by closure, so each step compiles once.
"""

import functools
import re
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from jaxtrain.models.transformer import layer_paths
from jaxtrain.training.metrics import train_key
from jaxtrain.training.settings.config import TrainConfig


class TrainState(train_state.TrainState):
    """Flax's TrainState plus the EMA of the parameters and the run's base PRNG key."""

    ema_params: Any
    rng: jax.Array  # raw uint32 key [2]; per-step keys are fold_in(rng, step)


def param_shapes(family):
    """The family's parameters as jax.ShapeDtypeStructs, without computing them."""
    return jax.eval_shape(lambda: family.init(jax.random.PRNGKey(0), 1))


def param_path(path) -> str:
    """'encoder/Dense_0/kernel' from a jax tree path."""
    return "/".join(str(getattr(k, "key", k)) for k in path)


def _matches(pattern: str, path: str) -> bool:
    """Whether `pattern`'s components match consecutive components of `path`: each a
    regular expression matched whole, case-insensitively, a trailing _N optional (so
    `embed` matches Embed_0 and `Block` every block)."""
    wanted = [re.compile(rf"(?:{p})(?:_\d+)?", re.IGNORECASE) for p in pattern.split("/")]
    parts = path.split("/")
    return any(all(w.fullmatch(part) for w, part in zip(wanted, parts[i:i + len(wanted)]))
               for i in range(len(parts) - len(wanted) + 1))


def leaf_names(path: str, leaf) -> list[str]:
    """The names a parameter answers to: its path, or for a leaf that stacks the layers
    of scanned blocks, one name per layer as the unrolled layout has them (Block_0/...,
    models/transformer.py:layer_paths)."""
    return layer_paths(path, leaf) or [path]


def _trained(params, patterns):
    """(treedef, per leaf a bool per name: trained, not matched by a pattern) after
    checking the patterns. A pattern that matches nothing, or one that freezes
    everything, is an error."""
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"--freeze {pattern!r} is not a valid pattern ({e})") from None
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [leaf_names(param_path(path), leaf) for path, leaf in leaves]
    for pattern in patterns:
        if not any(_matches(pattern, n) for leaf in names for n in leaf):
            raise ValueError(f"--freeze {pattern!r} matches no parameter: see the paths with "
                             "`jaxtrain fit ... --list-params`")
    trained = [[not any(_matches(q, n) for q in patterns) for n in leaf] for leaf in names]
    if not any(any(rows) for rows in trained):
        raise ValueError(f"--freeze {','.join(patterns)} freezes every parameter: nothing "
                         "would train; freeze less")
    return treedef, trained


def partly_frozen(params, patterns) -> bool:
    """Whether `patterns` freeze some layers of a stacked leaf and not others (`--freeze
    Block_0` of scanned blocks): training/commands/prepare.py then unrolls the run."""
    return _partly(_trained(params, patterns)[1])


def _partly(trained) -> bool:
    return any(any(rows) and not all(rows) for rows in trained)


def trainable_mask(params, patterns):
    """A pytree of bools like `params`: False (frozen) where a `patterns` entry matches
    the path; a stacked leaf's layers match as Block_0/..., Block_1/..., and must be
    frozen all alike (see partly_frozen)."""
    treedef, trained = _trained(params, patterns)
    if _partly(trained):
        raise ValueError(f"--freeze {','.join(patterns)} freezes some of the scanned blocks "
                         "only: train such a run with unrolled blocks (scan_layers false)")
    return jax.tree.unflatten(treedef, [all(rows) for rows in trained])


def run_keys(seed: int) -> dict:
    """The run's independent key streams, all derived from the one seed."""
    if -2**31 <= seed < 2**31:
        init, train, eval_, sample = _split_seed(seed)
    else:  # a seed wider than the jitted int32 argument
        init, train, eval_, sample = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"init": init, "train": train, "eval": eval_, "sample": sample}


def sample_key(seed: int):
    """The key of the samples the judge scores (--final-eval samples=N, eval --samples):
    the run's eval key folded with 2, so both commands draw the same images."""
    return jax.random.fold_in(run_keys(seed)["eval"], 2)


@jax.jit
def _split_seed(seed):
    """One compiled program (eagerly, seeding, splitting and unstacking compile three;
    0.8 s of a cold start), with the same bits."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    return keys[0], keys[1], keys[2], keys[3]


def create_state(family, train: TrainConfig, tx, start=None) -> TrainState:
    """A fresh TrainState at step 0: new parameters, or `start` = (params, ema_params)
    taken from another run (fine-tuning) with a fresh optimizer state."""
    keys = run_keys(train.seed)
    params, ema = start or (family.init(keys["init"], train.batch_size), None)
    # A copy: the step donates the state, and two leaves sharing one buffer cannot both
    # be donated.
    ema = jax.tree.map(jnp.copy, params if ema is None else ema)
    state = TrainState.create(apply_fn=family.model.apply, params=params, tx=tx,
                              ema_params=ema, rng=keys["train"])
    # create() leaves step a Python int (weakly typed); the step returns an int32 array,
    # and that change of type would compile the step a second time.
    return state.replace(step=jnp.zeros((), jnp.int32))


def ema_decay_at(step, decay):
    """The EMA's decay at `step`, ramped up as (1 + t) / (10 + t) so early averages are
    not dominated by the random initialisation."""
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_ema(ema_params, params, decay, trainable=None):
    """decay * ema + (1 - decay) * params; frozen leaves (trainable False) are kept as
    they are, bitwise (the float update would move them when ema != params)."""
    if trainable is None:
        return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)
    return jax.tree.map(lambda e, p, t: decay * e + (1.0 - decay) * p if t else e,
                        ema_params, params, trainable)


def gpu_determinism(family) -> dict:
    """XLA options that make a compiled GPU program repeatable, so resume is exact there
    as on a CPU: deterministic kernels only (no atomics in scatter-adds and reductions)
    and no timing-based autotuning. {} on a CPU (deterministic already) and for cuDNN's
    attention, which fails to compile with them (jax 0.11.2, H200, measured): such a run
    relies on the persistent compilation cache handing every later process the program
    the first one compiled (docs/gpu.md)."""
    if jax.default_backend() != "gpu" or family.attention == "cudnn":
        return {}
    return {"xla_gpu_deterministic_ops": True}


def make_train_step(family, schedule, ema_decay, parallel=None, accumulate=1, trainable=None,
                    steps_per_call=1):
    """One jitted optimizer step; `state` is donated, so the caller must not reuse it.
    With `accumulate` K > 1, the batch is split into K micro-batches whose gradients are
    averaged before the one update (see accumulated_grads). A `trainable` mask freezes
    the False leaves. With a `parallel.DataParallel`, the batch is split over its mesh
    and the state and metrics are replicated.

    With `steps_per_call` S > 1 the jitted function takes S stacked batches [S, B, ...]
    and runs S steps in one lax.scan: one dispatch (and one host-to-device copy) for S
    steps, which is what a small model's step time is made of. Its metrics are stacked
    [S]. The scan's body is the same step (keys and EMA from state.step), and on a CPU
    its states equal S single steps bitwise (tests/test_steps_per_call.py)."""
    loss_fn = family.train_loss
    if trainable is not None:
        # Frozen leaves get a zero gradient that XLA need not compute (their weight
        # gradients drop out of the program); the optimizer zeroes their updates too.
        def loss_fn(params, batch, rng):
            params = jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p),
                                  params, trainable)
            return family.train_loss(params, batch, rng)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

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
        ema = update_ema(state.ema_params, new_state.params, ema_decay_at(state.step, ema_decay),
                         trainable)
        metrics = {"loss": loss, **metrics, "grad_norm": optax.global_norm(grads),
                   "lr": schedule(state.step)}
        metrics = {train_key(k): v for k, v in metrics.items()}  # the record's keys
        return new_state.replace(ema_params=ema), metrics

    step = train_step
    if steps_per_call > 1:
        def step(state, batches):
            return jax.lax.scan(train_step, state, batches)

    shardings = {} if parallel is None else {
        "in_shardings": (parallel.replicated,
                         parallel.stacked if steps_per_call > 1 else parallel.batch),
        "out_shardings": (parallel.replicated, parallel.replicated)}
    return jax.jit(step, donate_argnums=0, compiler_options=gpu_determinism(family),
                   **shardings)


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
    return jax.jit(family.eval_sums, compiler_options=gpu_determinism(family), **shardings)
