"""The model families' architecture settings, as plain dataclasses: importing them costs
no JAX, so the command line builds its options (and `--help` answers) at once. Each
family's module (models/vae.py, models/transformer.py) re-exports its config.
"""

import dataclasses
import math

from jaxtrain.models.fields import SettingError, setting, validate
from jaxtrain.models.registry import Model, register

LIKELIHOODS = ("bernoulli", "gaussian")
CONDITIONS = ("every-layer", "latent")
PRIORS = ("class", "standard")
ACTIVATIONS = ("relu", "gelu", "silu", "elu")  # models/vae.py:ACTIVATION_FNS
NETWORKS = ("mlp", "conv")  # models/vae.py:VAE
PIXEL_MODELS = ("independent", "local-ar")  # models/vae.py:VAE


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture and loss of the VAE; saved with every checkpoint."""

    encoder_widths: tuple[int, ...] = setting(
        (512, 256), "vae: encoder hidden widths, comma-separated.")
    decoder_widths: tuple[int, ...] = setting(
        (512, 1024), "vae: decoder hidden widths, comma-separated.")
    latent_dim: int = setting(32, "vae: size of the latent z.", gt=0)
    activation: str = setting(
        "silu", "vae: the hidden layers' nonlinearity (runs saved without it: relu).",
        choices=ACTIVATIONS)
    likelihood: str = setting(
        "bernoulli", "vae: bernoulli (logits + binary cross-entropy, loss in nats) or gaussian "
        "(the tutorial's squared error).", choices=LIKELIHOODS)
    kl_weight: float = setting(
        1.0, "vae: weight of the KL term in the training loss (the reported test loss is "
        "always the true -ELBO).", ge=0)
    condition: str = setting(
        "every-layer", "vae: how the decoder sees the class: every-layer (the one-hot label "
        "joins every decoder layer's input, Sohn et al.'s CVAE) or latent (a learned "
        "projection added to z, runs before 2026-11-27).",
        choices=CONDITIONS)
    prior: str = setting(
        "class", "vae: p(z | c), what sampling draws z from: class (a learned diagonal "
        "Gaussian per class) or standard (N(0, I), runs before 2026-11-27).", choices=PRIORS)
    binarize: bool = setting(
        False, "vae: train on binarized images (a fresh draw each time an image is seen) "
        "and test on the digits Transformer's fixed binarization, so likelihoods compare "
        "with it and with binarized-MNIST papers.")
    network: str = setting(
        "mlp", "vae: mlp (Dense layers on the flat pixels, --encoder-widths/--decoder-widths) "
        "or conv (a small ResNet of 3x3 convolutions, --channels; the class as FiLM).",
        choices=NETWORKS)
    channels: tuple[int, ...] = setting(
        (32, 64), "vae, --network conv: channels of the encoder's stages, each halving H and "
        "W (a residual block at the last); the decoder mirrors them.")
    pixel_model: str = setting(
        "independent", "vae: the decoder's pixels: independent given z and the class, or "
        "local-ar (each pixel also sees the 12 pixels before it in a 5x5 window, PixelCNN's "
        "mask A one layer deep: sharper likelihoods; sampling then fills the pixels one by "
        "one).", choices=PIXEL_MODELS)
    num_classes: int = setting(10, cli=False)
    # (H, W, C) of the images, from the data's spec (models/spec.py) when the run is made.
    image_shape: tuple[int, ...] | None = setting(None, cli=False)

    # Settings of the loss, not of the parameters: a fine-tuned run may change them.
    NOT_ARCHITECTURE = ("likelihood", "kl_weight", "binarize")
    # The values of settings added since a run may have been saved that its parameters
    # were made with (a saved config lacking the field gets this, not the default).
    LEGACY = {"condition": "latent", "prior": "standard", "activation": "relu",
              "network": "mlp", "pixel_model": "independent"}

    def __post_init__(self):
        # JSON and TOML give lists back; keep the dataclass hashable and comparable.
        for name in ("encoder_widths", "decoder_widths", "channels", "image_shape"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        validate(self)
        if not self.channels or min(self.channels) < 1:
            raise SettingError("channels", f"takes positive channel counts, got {self.channels}")

    @classmethod
    def upgrade(cls, values: dict) -> dict:
        """A config saved before image shapes: its flat image_dim was a square grey image."""
        values = dict(values)
        if "image_dim" in values:
            side = math.isqrt(values.pop("image_dim"))
            values.setdefault("image_shape", (side, side, 1))
        return values


# Images for the Transformer (models/pixel_lm.py) are 2x2 binary patches, per channel.
PATCH_SYMBOLS = 16  # 2x2 binary pixels


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture; saved with every checkpoint. vocab_size/output_size come from the task."""

    layers: int = setting(4, "transformer: blocks.", gt=0)
    d_model: int = setting(128, "transformer: width.", gt=0)
    heads: int = setting(4, "transformer: attention heads.", gt=0)
    dropout: float = setting(0.1, "transformer: dropout rate.", ge=0.0, lt=1.0)
    context: int | None = setting(
        None, "transformer: sequence length; images: their 2x2 patches (H/2 * W/2 * C), text: "
        "256.", gt=0, shown="the data's")
    vocab_size: int = setting(PATCH_SYMBOLS + 10, cli=False)  # pixel symbols, then classes
    output_size: int = setting(PATCH_SYMBOLS, cli=False)
    num_classes: int = setting(10, cli=False)
    # Images: (H, W, C) from the data's spec (models/spec.py); None for text.
    image_shape: tuple[int, ...] | None = setting(None, cli=False)
    decode: bool = setting(False, cli=False)
    # The blocks as one nn.scan over stacked parameters (one block compiled, whatever the
    # depth) or unrolled, Block_0, Block_1, ... (runs saved before 2026-12-01).
    scan_layers: bool = setting(True, cli=False)

    # Settings that leave the parameters alone: a fine-tuned run may change them
    # (scan_layers changes their layout only: prepare converts them).
    NOT_ARCHITECTURE = ("dropout", "decode", "scan_layers")
    LEGACY = {"scan_layers": False}

    def __post_init__(self):
        if isinstance(self.image_shape, list):
            object.__setattr__(self, "image_shape", tuple(self.image_shape))
        validate(self)
        if self.d_model % self.heads:
            raise SettingError("d_model", f"{self.d_model} must be a multiple of --heads "
                                          f"{self.heads}")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def upgrade(cls, values: dict) -> dict:
        """A digits config saved before image shapes: square grey images of 2x2 patches
        (its context was their number, its outputs the patch symbols)."""
        values = dict(values)
        if ("image_shape" not in values and values.get("output_size") == PATCH_SYMBOLS
                and values.get("vocab_size", 0) > PATCH_SYMBOLS):  # (text: vocab == outputs)
            side = 2 * math.isqrt(values["context"])
            values["image_shape"] = (side, side, 1)
        return values


# Each model beside its config; its families' modules are imported when a run is built.
register(Model("vae", VAEConfig, {"images": "vae:VAEFamily"}))
register(Model("transformer", TransformerConfig, {"images": "pixel_lm:PixelLMFamily",
                                                  "text": "charlm:CharLMFamily"}))


def saved_fields(cls, values: dict) -> dict:
    """A saved config's fields, upgraded (a model config's `upgrade`) and with LEGACY
    values for fields it predates."""
    if hasattr(cls, "upgrade"):
        values = cls.upgrade(values)
    return {**{k: v for k, v in cls.LEGACY.items() if k not in values}, **values}
