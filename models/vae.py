"""Class-conditional variational autoencoder for images of any shape, in Flax linen.

Shapes: B batch, (H, W, Ch) an image (models/spec.py), D = H * W * Ch pixels, C classes,
Z latent size, F hidden width or channels.

Two networks (VAEConfig.network) behind one encode/reparam/decode interface:
- mlp: Dense layers on the flat pixels. The encoder sees the class as a one-hot vector
  concatenated to the pixels; the decoder as the one-hot vector concatenated to each
  layer's input (condition="every-layer", Sohn et al.'s CVAE) or a projection of it
  added to z (condition="latent", the Flax/JAX tutorials').
- conv: a small ResNet. The encoder halves H and W at each stage with a stride-2 3x3
  convolution and ends in a residual block; the decoder mirrors it (nearest-neighbour
  upsampling, then a 3x3 convolution). The class enters every residual block as FiLM
  (a learned per-class scale and shift of the channels) and the decoder's input as a
  one-hot vector beside z.
With pixel_model="local-ar" (either network) each pixel's logit also sees the 12 pixels
before it in its 5x5 window (models/networks.py:LocalAR): scoring is one pass, drawing
fills the pixels in raster order.
The encoder puts each class in a region of z, so the prior is learned per class
(prior="class"), sending `sample --class c` to c's region (docs/evaluating.md: "Why the
VAE's defaults are what they are").
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.models.binarize import dynamic_bits, test_bits
from jaxtrain.models.configs import LIKELIHOODS, VAEConfig  # noqa: F401 (re-exported)
from jaxtrain.models.family import PRECISIONS, Family, example_keys
from jaxtrain.models.likelihoods import (
    bernoulli_nll,
    decoded_image,
    fill_values,
    kl_divergence,
    log_normal,
    reconstruction_nll,
)
from jaxtrain.models.networks import (
    ConvDecoder,
    ConvEncoder,
    FeedForward,
    LocalAR,
    causal_neighbours,
    raster_fill,
)

# The class prior's parameters are stored divided by this: AdamW moves a parameter by
# about lr a step, and the class regions of z sit 3-5 units from the origin (Fashion-
# MNIST, one epoch: class accuracy of samples 65% with scale 1, 94% with 10).
PRIOR_SCALE = 10.0


class VAE(nn.Module):
    """Encoder q(z | x, c), decoder p(x | z, c); the decoder returns pixel logits. With
    `dtype` bfloat16 the hidden layers' matmuls run in bf16; the latent's mean and
    log-variance and the pixel logits are float32, so the losses keep their meaning."""

    config: VAEConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        if c.network == "conv":
            self.encoder = ConvEncoder(c.channels, self.dtype, c.activation)
            self.decoder = ConvDecoder(c.channels, tuple(c.image_shape), self.dtype,
                                       c.activation)
        else:
            self.encoder = FeedForward(c.encoder_widths, self.dtype, c.activation)
            self.decoder = FeedForward(c.decoder_widths, self.dtype, c.activation)
            self.out = nn.Dense(math.prod(c.image_shape))
        if c.pixel_model == "local-ar":
            self.local_ar = LocalAR()
        self.mean = nn.Dense(c.latent_dim)
        self.logvar = nn.Dense(c.latent_dim)
        if c.condition == "latent":
            self.class_proj = nn.Dense(c.latent_dim)
        if c.prior == "class":  # starts as N(0, I) for every class
            zeros = nn.initializers.zeros
            self.prior_mean = nn.Embed(c.num_classes, c.latent_dim, embedding_init=zeros)
            self.prior_logvar = nn.Embed(c.num_classes, c.latent_dim, embedding_init=zeros)

    def prior(self, label):
        """p(z | c) as (mean, logvar) [B, Z]: N(0, I), or a learned Gaussian per class."""
        if self.config.prior == "standard":
            zeros = jnp.zeros((*label.shape, self.config.latent_dim))
            return zeros, zeros
        return PRIOR_SCALE * self.prior_mean(label), PRIOR_SCALE * self.prior_logvar(label)

    def encode(self, x, label):
        """q(z | x, c) as (mean, logvar) [B, Z] of images x [B, H, W, Ch]."""
        onehot = jax.nn.one_hot(label, self.config.num_classes)  # [B, C]
        if self.config.network == "conv":
            h = self.encoder(x, onehot)  # [B, F]
        else:
            h = self.encoder(jnp.concatenate([x.reshape(len(x), -1), onehot], axis=-1))
        return self.mean(h), self.logvar(h)  # [B, Z], [B, Z]

    def reparam(self, mean, logvar, keys):
        """z = mean + sigma * eps, eps drawn per example from `keys` [B, 2]."""
        eps = jax.vmap(lambda k: jax.random.normal(k, mean.shape[1:]))(keys)  # [B, Z]
        return mean + jnp.exp(0.5 * logvar) * eps  # [B, Z]

    def decode(self, z, label):
        """The decoder's pixel outputs [B, H, W, Ch] (logits or means) for latents z [B, Z]."""
        onehot = jax.nn.one_hot(label, self.config.num_classes)  # [B, C]
        if self.config.condition == "latent":
            z = z + self.class_proj(onehot)
        if self.config.network == "conv":
            return self.decoder(z, onehot)
        if self.config.condition == "latent":
            out = self.out(self.decoder(z))  # [B, D]
        else:
            out = self.out(jnp.concatenate([self.decoder(z, onehot), onehot], axis=-1))
        return out.reshape(-1, *self.config.image_shape)

    def pixel_outputs(self, out, x):
        """The pixel outputs [B, H, W, Ch] that score images x [B, H, W, Ch] given the
        decoder's `out`: `out` itself, or with local-ar each pixel's corrected by its causal
        neighbours in x (one pass: a pixel never sees itself or the pixels after it)."""
        if self.config.pixel_model == "independent":
            return out
        return self.local_ar(out, causal_neighbours(x))

    def pixel_output(self, out, neighbours):
        """local-ar for one pixel: output [N, Ch] from the decoder's and 12 neighbours' values."""
        return self.local_ar(out, neighbours)

    def __call__(self, x, label, keys):
        """(pixel outputs [B, H, W, Ch] scoring x, (mean, logvar) of q(z | x, c), of p(z | c))."""
        mean, logvar = self.encode(x, label)
        z = self.reparam(mean, logvar, keys)
        out = self.pixel_outputs(self.decode(z, label), x)
        return out, (mean, logvar), self.prior(label)


# --- The model family as the trainer sees it. ---


class VAEFamily(Family):
    """Images from a class-conditional VAE: the trainer's view (models/family.py)."""

    units = {"train_loss": "nats/image", "test_loss": "nats/image"}
    sample_pixels = "grey"  # sample() returns Bernoulli means (training/scoring/quality.py)
    eval_rows = 1024
    no_decay = ("prior_mean", "prior_logvar")  # a distribution's parameters, not weights

    def __init__(self, config: VAEConfig, precision: str = "float32"):
        self.config = config
        self.model = VAE(config, PRECISIONS[precision])
        # What the test loss scores: eval and docs/evaluating.md say which.
        self.target_pixels = "binary" if config.binarize else "grey"

    def init(self, rng, batch_size):
        x = jnp.zeros((batch_size, *self.config.image_shape), jnp.float32)
        label = jnp.zeros((batch_size,), jnp.int32)
        keys = example_keys(rng, jnp.arange(batch_size))
        return self.model.init(rng, x, label, keys)["params"]

    def targets(self, batch, rng=None):
        """The pixels the model is scored on [B, H, W, Ch]: grey levels in [0, 1] (used as
        Bernoulli probabilities), or with `binarize` a fresh binarization of a training
        batch (rng given) or the fixed one of a test batch (models/binarize.py)."""
        if not self.config.binarize:
            return batch["image"] / 255.0  # uint8 pixels -> [0, 1]
        if rng is None:
            return test_bits(batch["image"], batch["index"])
        return dynamic_bits(example_keys(jax.random.fold_in(rng, 1), batch["row"]),
                            batch["image"])

    def _terms(self, params, x, label, keys):
        out, posterior, prior = self.model.apply({"params": params}, x, label, keys)
        return reconstruction_nll(self.config, out, x), kl_divergence(*posterior, *prior)

    def train_loss(self, params, batch, rng):
        """Mean over the batch of recon + kl_weight * KL; returns (loss, metrics)."""
        recon, kl = self._terms(params, self.targets(batch, rng), batch["label"],
                                example_keys(rng, batch["row"]))
        loss = jnp.mean(recon + self.config.kl_weight * kl)
        return loss, {"recon": recon.mean(), "kl": kl.mean()}

    def eval_sums(self, params, batch, rng):
        """Sums over the real (mask == 1) examples; the loss is the negative ELBO. Each
        example's z is drawn from fold_in(rng, its index in the test set), so the figure
        does not depend on the batch size."""
        recon, kl = self._terms(params, self.targets(batch), batch["label"],
                                example_keys(rng, batch["index"]))
        mask = batch["mask"]
        return {"loss": jnp.sum((recon + kl) * mask), "recon": jnp.sum(recon * mask),
                "kl": jnp.sum(kl * mask), "count": jnp.sum(mask)}

    def finalize(self, metrics):
        return {k: metrics[k] for k in ("loss", "recon", "kl")}

    def iw_sums(self, params, batch, rng, samples: int, chunk: int):
        """Sums over the real examples of -log p(x | c) estimated with `samples` importance
        samples z_k ~ q(z | x, c) (Burda et al.'s IWAE bound):
            log p(x | c) ~ logsumexp_k [log p(x | z_k, c) + log p(z_k | c) - log q(z_k | x, c)]
                           - log K,
        a lower bound on log p(x | c) that tightens as K grows (K = 1 is the ELBO). The
        samples are drawn `chunk` at a time in a lax.scan with a running logsumexp, so
        memory holds B x chunk decoded images whatever K. Sample j of example i comes from
        fold_in(fold_in(rng, its test-set index), j), so the figure depends on neither the
        batch nor the chunk (but for the float rounding of the sums)."""
        if self.config.likelihood != "bernoulli":
            raise ValueError("the importance-weighted likelihood needs --likelihood bernoulli "
                             "(the gaussian recon term is not a density)")
        x, label = self.targets(batch), batch["label"]  # [B, H, W, Ch], [B]
        b, z_dim = x.shape[0], self.config.latent_dim
        keys = example_keys(rng, batch["index"])  # [B, 2]
        mean, logvar = self.model.apply({"params": params}, x, label, method=VAE.encode)
        prior_mean, prior_logvar = self.model.apply({"params": params}, label,
                                                    method=VAE.prior)  # [B, Z] each
        std = jnp.exp(0.5 * logvar)

        def log_weights(i):  # the weights of samples i * chunk ... [B, chunk]
            # Sample j of an example is drawn from its key folded with j, whatever the
            # chunk: any chunk (training/engine/evaluate.py:iw_chunk) draws the same z.
            ids = i * chunk + jnp.arange(chunk)  # [C]
            eps = jax.vmap(lambda k: jax.vmap(lambda j: jax.random.normal(
                jax.random.fold_in(k, j), (z_dim,)))(ids))(keys)  # [B, C, Z]
            z = mean[:, None] + std[:, None] * eps  # [B, C, Z]
            out = self.model.apply({"params": params}, z.reshape(b * chunk, z_dim),
                                   jnp.repeat(label, chunk), method=VAE.decode)  # [B*C, ...]
            xs = jnp.repeat(x, chunk, axis=0)
            out = self.model.apply({"params": params}, out, xs, method=VAE.pixel_outputs)
            log_px = -bernoulli_nll(out, xs).reshape(b, chunk)
            log_w = (log_px + log_normal(z, prior_mean[:, None], prior_logvar[:, None])
                     - log_normal(z, mean[:, None], logvar[:, None]))  # [B, C]
            real = ids < samples  # the last chunk may overhang K
            return jnp.where(real, log_w, -jnp.inf)

        def body(total, i):
            return jnp.logaddexp(total, jax.nn.logsumexp(log_weights(i), axis=1)), None

        chunks = -(-samples // chunk)
        total, _ = jax.lax.scan(body, jnp.full((b,), -jnp.inf), jnp.arange(chunks))
        log_p = total - jnp.log(samples)  # [B]
        return {"iw_nll": jnp.sum(-log_p * batch["mask"]), "count": jnp.sum(batch["mask"])}

    def sample(self, params, labels, rng):
        """Images [N, H, W, Ch] in [0, 1] of classes `labels` [N], from z ~ p(z | c)."""
        return np.asarray(self._sample(params, jnp.asarray(labels), rng))

    def epoch_images(self, params, rng, preview):
        """PNG grids written after each epoch, as {name: (images, columns)}: samples, one
        row per class, all rows from the same noise (so epochs compare); the given test
        images above their reconstructions."""
        images, labels = preview
        samples, recon = jax.device_get(self._epoch_images(params, rng, jnp.asarray(images),
                                                           jnp.asarray(labels)))
        return {"samples": (samples, self.config.num_classes),
                "recon": (np.concatenate([images, recon]), len(images))}

    # The samplers are jitted whole: eagerly, each operation would compile on its own.

    @functools.partial(jax.jit, static_argnums=0)
    def _epoch_images(self, params, rng, images, labels):
        n = self.config.num_classes
        classes = jnp.repeat(jnp.arange(n), n)
        eps = jnp.tile(jax.random.normal(rng, (n, self.config.latent_dim)), (n, 1))
        z = self.latents(params, rng, classes, eps)
        return (self.generate(params, classes, z, jax.random.fold_in(rng, 1)),
                self.reconstruct(params, images, labels))

    @functools.partial(jax.jit, static_argnums=0)
    def _sample(self, params, labels, rng):
        z = self.latents(params, rng, labels)
        return self.generate(params, labels, z, jax.random.fold_in(rng, 1))

    def generate(self, params, labels, z, rng=None):
        """Images [N, H, W, Ch] in [0, 1] for classes `labels` [N] from latents `z` [N, Z].
        With local-ar the pixels are filled in raster order, each given the ones before it
        (likelihoods.py:fill_values; rng, or key 0, draws a binarized model's bits)."""
        out = self.model.apply({"params": params}, z, labels, method=VAE.decode)
        if self.config.pixel_model == "independent":
            return decoded_image(self.config, out)
        return raster_fill(out, lambda pixel_out, neighbours, key: fill_values(
            self.config, self.model.apply({"params": params}, pixel_out, neighbours,
                                          method=VAE.pixel_output), key),
            jax.random.PRNGKey(0) if rng is None else rng)[1]

    def reconstruct(self, params, images, labels):
        """Reconstructions [N, H, W, Ch] from the posterior mean (no sampling noise)."""
        mean, _ = self.model.apply({"params": params}, images, labels, method=VAE.encode)
        return self.generate(params, labels, mean)

    def latents(self, params, rng, labels, eps=None):
        """z [N, Z] drawn from p(z | c) for classes `labels` [N]: mean + sigma * eps,
        eps [N, Z] standard normal (drawn from rng unless given)."""
        labels = jnp.asarray(labels)
        if eps is None:
            eps = jax.random.normal(rng, (len(labels), self.config.latent_dim))
        mean, logvar = self.model.apply({"params": params}, labels, method=VAE.prior)
        return mean + jnp.exp(0.5 * logvar) * eps
