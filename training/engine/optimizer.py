"""The optimizer, built in one place from its section (training/settings/optimizer.py):
the LR schedule, then clipping and AdamW, whose weight decay is masked to the kernels
and embeddings as nanoGPT's configure_optimizers and levanter do.
"""

import functools

import jax
import optax

from jaxtrain.models.transformer import layer_paths
from jaxtrain.training.engine.steps import param_path
from jaxtrain.training.settings.optimizer import OptimizerConfig

# A leaf's own names that are never decayed, whatever their rank: biases (an attention
# DenseGeneral's are [H, D/H]) and a LayerNorm's scale.
NOT_DECAYED = ("bias", "scale")


def warmup_steps(opt: OptimizerConfig, total_steps: int) -> int:
    """--warmup-steps, or a tenth of the run (the VAE's default: Fashion-MNIST -ELBO after
    10 epochs 235.05 with 500 steps of warmup against 235.47 with 200, and a 1-epoch run
    of 468 steps still warms up)."""
    return total_steps // 10 if opt.warmup_steps is None else opt.warmup_steps


def make_schedule(opt: OptimizerConfig, total_steps: int):
    """Linear warmup from lr/100 to lr, then cosine decay to lr/100 at total_steps."""
    warmup = warmup_steps(opt, total_steps)
    if warmup >= total_steps:
        raise ValueError(f"--warmup-steps {warmup} must be smaller than the run's "
                         f"{total_steps} total steps: lower --warmup-steps or train longer")
    return optax.warmup_cosine_decay_schedule(
        init_value=opt.lr / 100, peak_value=opt.lr, warmup_steps=warmup,
        decay_steps=total_steps, end_value=opt.lr / 100)


def decays(path: str, leaf, no_decay=()) -> bool:
    """Whether weight decay shrinks the parameter at `path` ('encoder/Dense_0/kernel'):
    one that is 2-D or more per layer (a stacked leaf's layer axis not counted), not a
    bias or a scale, and with no path component in `no_decay`."""
    parts = path.split("/")
    ndim = leaf.ndim - (layer_paths(path, leaf) is not None)
    return ndim >= 2 and parts[-1] not in NOT_DECAYED and not set(parts) & set(no_decay)


def decay_mask(params, no_decay=()):
    """A pytree of bools like `params`: True where weight decay applies (see decays)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: decays(param_path(path), leaf, no_decay), params)


def make_optimizer(opt: OptimizerConfig, schedule, trainable=None, no_decay=()):
    """Clipping then AdamW. Its weight decay applies to every parameter
    (`weight_decay_mask` all, runs saved before it existed: the optimizer state of
    then) or to decay_mask's (kernels, with the family's `no_decay` names left out).
    With a `trainable` mask (a pytree of bools like the params), frozen parameters get
    zero updates (no weight decay either) and stay out of the clipping norm:
    optax.multi_transform over the labels "train" and "frozen"."""
    mask = None if opt.weight_decay_mask == "all" else functools.partial(
        decay_mask, no_decay=no_decay)
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip),
                     optax.adamw(schedule, weight_decay=opt.weight_decay, mask=mask))
    if trainable is None:
        return tx
    labels = jax.tree.map(lambda t: "train" if t else "frozen", trainable)
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
