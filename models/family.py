"""The contract between a model family and the trainer, written down as a Protocol.

A family is an objective (init, a training loss, evaluation sums with an explicit
count, and a finalize that turns the means into reported metrics), a sampler (one
entry, `sample`, for images and text alike), and the units its numbers are in. The
trainer, the checkpoints and the CLI know nothing else about a model.
"""

from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = Any  # a pytree of arrays
# name -> array; see training/sources/images.py (images) and training/sources/text.py
# (text). A training batch also carries "row" int32 [B]: each example's row in the
# step's whole batch.
Batch = dict
# --precision -> the dtype of the models' matmuls (parameters and losses stay float32).
PRECISIONS = {"float32": jnp.float32, "bf16": jnp.bfloat16}


def example_keys(rng: jax.Array, ids: jax.Array) -> jax.Array:
    """One key per example [B, 2]: fold_in(rng, id). Noise drawn per example from these
    (VAE latents, binarizations, dropout masks) does not depend on how a batch is split,
    so K accumulated micro-batches draw exactly what the whole batch draws."""
    return jax.vmap(jax.random.fold_in, (None, 0))(rng, ids)


@runtime_checkable
class Family(Protocol):
    name: str  # the --model value
    model: nn.Module  # the network the train state applies
    sample_options: tuple[str, ...]  # keyword options `sample` accepts (temperature, top_k)
    # Units of the numbers, e.g. {"train_loss": "nats/token", "test_loss": "nats/image"}.
    units: dict[str, str]
    # Tokens per example for a sequence model (progress counts tokens), else None.
    tokens_per_example: int | None
    flops_per_example: float  # training FLOPs (forward + backward) of one example

    def init(self, rng: jax.Array, batch_size: int) -> Params:
        """Fresh parameters."""

    def train_loss(self, params: Params, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict]:
        """(the scalar objective, {name: scalar} of companions), differentiated by the step.
        Both are means over the batch, and its noise is drawn per example from
        example_keys(rng, batch["row"]), so a batch split into micro-batches gives
        the same means (training/engine/steps.py accumulates them)."""

    def eval_sums(self, params: Params, batch: Batch, rng: jax.Array) -> dict:
        """Sums over the batch's real examples (mask == 1), with their "count": summing
        over batches and dividing by the total count gives exact means, whatever the
        padding of the last batch."""

    def finalize(self, means: dict) -> dict:
        """Reported test metrics ("test_loss" first) from the means of the eval sums."""

    def sample(self, params: Params, request: Any, rng: jax.Array, **options) -> Any:
        """Generates from the model: images [N, 28, 28] in [0, 1] for class labels [N]
        (image families), or the tokens that follow a prompt (text)."""

    def epoch_images(self, params: Params, rng: jax.Array, preview: Any) -> dict:
        """{name: (images [N, 28, 28], columns)} of grids written at each evaluation."""

    def epoch_text(self, params: Params, rng: jax.Array) -> str | None:
        """A short generated text logged at each evaluation (text families), else None."""

    # Image families: sample_pixels, "grey" or "binary", what `sample` returns, so the
    # judge compares samples with test images of the same kind (training/scoring/quality.py).
    # Optional, VAE only: iw_sums(params, batch, rng, samples, chunk) -> {"iw_nll", "count"},
    # the importance-weighted test NLL (training/engine/run.py:evaluate_iw checks for it).
