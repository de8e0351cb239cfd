"""The VAE's networks (models/vae.py), in Flax linen: a stack of Dense layers on flat
vectors, and a small ResNet-style encoder and decoder for images [B, H, W, Ch] with the
class entering each residual block as FiLM.

Shapes: B batch, (H, W, Ch) an image, C classes, Z latent size, F width or channels.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATION_FNS = {"relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu, "elu": nn.elu}


class FeedForward(nn.Module):
    """A stack of Dense layers, each followed by `activation`; `dtype` of their matmuls.
    With a `condition` [B, C], every layer's input is concatenated with it."""

    widths: Sequence[int]
    dtype: Any = jnp.float32
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, condition=None):
        for width in self.widths:
            if condition is not None:
                x = jnp.concatenate([x, condition], -1)
            x = ACTIVATION_FNS[self.activation](nn.Dense(width, dtype=self.dtype)(x))
        return x


class ResBlock(nn.Module):
    """x + conv(act(conv(act(FiLM(x, c))))): two 3x3 convolutions of the same width, the
    class `condition` [B, C] as a per-channel scale and shift (Perez et al.'s FiLM)."""

    dtype: Any = jnp.float32
    activation: str = "silu"

    @nn.compact
    def __call__(self, x, condition):  # x [B, H, W, F]
        act, f = ACTIVATION_FNS[self.activation], x.shape[-1]
        scale, shift = jnp.split(nn.Dense(2 * f, kernel_init=nn.initializers.zeros,
                                          name="film")(condition), 2, axis=-1)  # [B, F]
        h = x * (1 + scale[:, None, None]) + shift[:, None, None]
        h = nn.Conv(f, (3, 3), dtype=self.dtype)(act(h))
        h = nn.Conv(f, (3, 3), dtype=self.dtype)(act(h))
        return x + h


class ConvEncoder(nn.Module):
    """Images [B, H, W, Ch] and the class [B, C] -> features [B, F]."""

    channels: Sequence[int]
    dtype: Any = jnp.float32
    activation: str = "silu"

    @nn.compact
    def __call__(self, x, condition):
        act = ACTIVATION_FNS[self.activation]
        for i, f in enumerate(self.channels):  # each stage halves H and W
            x = nn.Conv(f, (3, 3), strides=(2, 2), dtype=self.dtype)(act(x) if i else x)
        x = ResBlock(self.dtype, self.activation)(x, condition)  # [B, H/2^n, W/2^n, F]
        return act(x).reshape(x.shape[0], -1)


class ConvDecoder(nn.Module):
    """Latents [B, Z] and the class [B, C] -> pixel outputs [B, H, W, Ch]."""

    channels: Sequence[int]
    shape: tuple[int, int, int]
    dtype: Any = jnp.float32
    activation: str = "silu"

    @nn.compact
    def __call__(self, z, condition):
        act, (h, w, c) = ACTIVATION_FNS[self.activation], self.shape
        n = len(self.channels)
        small = (-(-h // 2 ** n), -(-w // 2 ** n))  # the encoder's last H, W (SAME padding)
        x = nn.Dense(small[0] * small[1] * self.channels[-1], dtype=self.dtype)(
            jnp.concatenate([z, condition], axis=-1))
        x = x.reshape(-1, *small, self.channels[-1])
        x = ResBlock(self.dtype, self.activation)(x, condition)
        for f in [*self.channels[-2::-1], c]:  # each stage doubles H and W
            x = jnp.repeat(jnp.repeat(act(x), 2, axis=1), 2, axis=2)
            x = nn.Conv(f, (3, 3), dtype=self.dtype if f != c else jnp.float32)(x)
        return x[:, :h, :w]  # [B, H, W, Ch] (an odd size was rounded up)


# A pixel's causal neighbours: the 12 pixels before it in raster order within the 5x5
# window around it (two rows above, five each, and two to its left): PixelCNN's mask A,
# one layer deep (van den Oord et al. 2016; as a VAE's decoder, Gulrajani et al.'s
# PixelVAE). (dy, dx) offsets, in the order their channels are concatenated.
CAUSAL_TAPS = tuple((dy, dx) for dy in (-2, -1, 0) for dx in range(-2, 3) if dy < 0 or dx < 0)


def causal_neighbours(x):
    """Images [B, H, W, Ch] -> [B, H, W, 12 * Ch]: at each pixel, the values of its causal
    neighbours (CAUSAL_TAPS, each with its Ch channels), 0 beyond the image's edge."""
    h, w = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (2, 0), (2, 2), (0, 0)))
    return jnp.concatenate([padded[:, 2 + dy:2 + dy + h, 2 + dx:2 + dx + w]
                            for dy, dx in CAUSAL_TAPS], axis=-1)


def raster_fill(out, pixel_value, key):
    """Images [N, H, W, Ch] filled pixel by pixel in raster order (H * W steps of one
    lax.fori_loop). For each pixel, pixel_value(its decoder output [N, Ch], its causal
    neighbours' values [N, 12 * Ch], fold_in(key, its raster index)) gives the value its
    later neighbours see and the value shown; returns both images (fed, shown)."""
    n, h, w, c = out.shape

    def fill(i, images):  # fed sits in a padded image at [2:, 2:-2]: windows stay inside
        fed, shown = images
        y, x = i // w, i % w
        window = jax.lax.dynamic_slice(fed, (0, y, x, 0), (n, 3, 5, c))  # rows y-2..y
        neighbours = jnp.concatenate([window[:, 2 + dy, 2 + dx] for dy, dx in CAUSAL_TAPS],
                                     axis=-1)  # [N, 12 * Ch], as causal_neighbours
        value, seen = pixel_value(out[:, y, x], neighbours, jax.random.fold_in(key, i))
        return (jax.lax.dynamic_update_slice(fed, value[:, None, None], (0, y + 2, x + 2, 0)),
                jax.lax.dynamic_update_slice(shown, seen[:, None, None], (0, y, x, 0)))

    start = (jnp.zeros((n, h + 2, w + 4, c), out.dtype), jnp.zeros_like(out))
    fed, shown = jax.lax.fori_loop(0, h * w, fill, start)
    return fed[:, 2:, 2:-2], shown


class LocalAR(nn.Module):
    """A pixel's logits [..., Ch] from the decoder, corrected by its causal neighbours'
    values [..., 12 * Ch] through one hidden layer of `width`: logits + f(neighbours,
    logits). The correction starts at 0 (the decoder alone). It sees no pixel at or after
    its own, so p(x | z, c) = prod_i p(x_i | x_<i, z, c) is a normalized density and the
    ELBO keeps its meaning."""

    width: int = 8

    @nn.compact
    def __call__(self, logits, neighbours):
        h = nn.Dense(self.width)(neighbours) + nn.Dense(self.width, use_bias=False)(logits)
        return logits + nn.Dense(logits.shape[-1], kernel_init=nn.initializers.zeros)(
            nn.silu(h))
