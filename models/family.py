"""The contract between a model family and the trainer, written down as a base class.

A family is an objective (init, a training loss, evaluation sums with an explicit
count, and a finalize that turns the means into reported metrics), a sampler (one
entry, `sample`, for images and text alike), and the units its numbers are in. The
trainer, the checkpoints and the CLI know nothing else about a model. The abstract
methods are what every family writes; the rest have defaults here, which a family
overrides where it has the feature (so the trainer never probes with hasattr).

The families, by task (each model registers its families in models/configs.py):
  VAEFamily (models/vae.py)         images from a class-conditional VAE (--model vae)
  PixelLMFamily (models/pixel_lm.py) images token by token: a Transformer over 2x2
                                    binary patches (--model transformer, image data)
  CharLMFamily (models/charlm.py)   text character by character (--model transformer
                                    --dataset text)
"""

import abc
from typing import Any, Callable, ClassVar

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


class Family(abc.ABC):
    model: nn.Module  # the network the train state applies
    # Units of the losses, by record key (training/metrics.py), e.g. {"train_loss":
    # "nats/token", "test_loss": "nats/image"}.
    units: ClassVar[dict[str, str]]

    # --- Optional members: the defaults are a family without the feature. ---
    # Keyword options `sample` accepts (temperature, top_k).
    sample_options: tuple[str, ...] = ()
    # Tokens per example of a sequence model (progress counts tokens), else None.
    tokens_per_example: int | None = None
    # The attention a Transformer runs ("blocked" or "cudnn": models/transformer.py).
    attention: str | None = None
    # Image families: what `sample` returns ("grey" or "binary"), so the judge compares
    # samples with test images of the same kind (training/scoring/quality.py) ...
    sample_pixels: str | None = None
    # ... and the pixels the test loss scores (`eval` says which).
    target_pixels: str | None = None
    # iw_sums(params, batch, rng, samples, chunk) -> {"iw_nll", "count"}: sums of the
    # importance-weighted test NLL (the VAE's: training/engine/evaluate.py:evaluate_iw);
    # None where the test loss is already an exact NLL.
    iw_sums: Callable | None = None
    # Rows per evaluation batch, where more than the training batch pays (forward passes
    # of a small model: the VAE's test set takes 0.85 s in batches of 128 and 0.43 s in
    # batches of 1024 on 2 CPU cores); None: the training batch.
    eval_rows: int | None = None
    # Path components of parameters that weight decay leaves alone besides biases and
    # norms (training/engine/optimizer.py:decays), e.g. the VAE's class prior.
    no_decay: tuple[str, ...] = ()

    @abc.abstractmethod
    def init(self, rng: jax.Array, batch_size: int) -> Params:
        """Fresh parameters."""

    @abc.abstractmethod
    def train_loss(self, params: Params, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict]:
        """(the scalar objective, {name: scalar} of companions), differentiated by the step;
        the record keys them train_loss, train_<name> (training/metrics.py). Both are
        means over the batch, and its noise is drawn per example from
        example_keys(rng, batch["row"]), so a batch split into micro-batches gives
        the same means (training/engine/steps.py accumulates them)."""

    @abc.abstractmethod
    def eval_sums(self, params: Params, batch: Batch, rng: jax.Array) -> dict:
        """Sums over the batch's real examples (mask == 1) of "loss" and its companions,
        with their "count": summing over batches and dividing by the total count gives
        exact means, whatever the padding of the last batch."""

    @abc.abstractmethod
    def finalize(self, means: dict) -> dict:
        """The test metrics ("loss" first; the record keys them test_<name>) from the
        means of the eval sums."""

    @abc.abstractmethod
    def sample(self, params: Params, request: Any, rng: jax.Array, **options) -> Any:
        """Generates from the model: images [N, H, W, C] in [0, 1] for class labels [N]
        (image families), or the tokens that follow a prompt (text)."""

    def epoch_images(self, params: Params, rng: jax.Array, preview: Any) -> dict:
        """{name: (images [N, H, W, C], columns)} of grids written at each evaluation;
        none by default."""
        return {}

    def epoch_text(self, params: Params, rng: jax.Array) -> str | None:
        """A short generated text logged at each evaluation (text families), else None."""
        return None
