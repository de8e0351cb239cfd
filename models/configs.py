"""The model families' architecture settings, as plain dataclasses: importing them costs
no JAX, so the command line builds its options (and `--help` answers) at once. Each
family's module (models/vae.py, models/transformer.py) re-exports its config.
"""

import dataclasses

from jaxtrain.models.fields import SettingError, setting, validate

LIKELIHOODS = ("bernoulli", "gaussian")
CONDITIONS = ("every-layer", "latent")
PRIORS = ("class", "standard")
ACTIVATIONS = ("relu", "gelu", "silu", "elu")  # models/vae.py:ACTIVATION_FNS


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
    num_classes: int = setting(10, cli=False)
    image_dim: int = setting(784, cli=False)

    # Settings of the loss, not of the parameters: a fine-tuned run may change them.
    NOT_ARCHITECTURE = ("likelihood", "kl_weight", "binarize")
    # The values of settings added since a run may have been saved that its parameters
    # were made with (a saved config lacking the field gets this, not the default).
    LEGACY = {"condition": "latent", "prior": "standard", "activation": "relu"}

    def __post_init__(self):
        # JSON and TOML give lists back; keep the dataclass hashable and comparable.
        for name in ("encoder_widths", "decoder_widths"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        validate(self)


# The default task is digits (models/pixel_lm.py): 2x2 binary patches of 28x28 images.
PATCH_SYMBOLS = 16  # 2x2 binary pixels
NUM_PATCHES = 196  # (28 / 2) ** 2


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture; saved with every checkpoint. vocab_size/output_size come from the task."""

    layers: int = setting(4, "transformer: blocks.", gt=0)
    d_model: int = setting(128, "transformer: width.", gt=0)
    heads: int = setting(4, "transformer: attention heads.", gt=0)
    dropout: float = setting(0.1, "transformer: dropout rate.", ge=0.0, lt=1.0)
    context: int = setting(
        NUM_PATCHES, "transformer: sequence length; digits need 196, text defaults to 256.",
        gt=0)
    vocab_size: int = setting(PATCH_SYMBOLS + 10, cli=False)  # pixel symbols, then classes
    output_size: int = setting(PATCH_SYMBOLS, cli=False)
    num_classes: int = setting(10, cli=False)
    decode: bool = setting(False, cli=False)
    # The blocks as one nn.scan over stacked parameters (one block compiled, whatever the
    # depth) or unrolled, Block_0, Block_1, ... (runs saved before 2026-12-01).
    scan_layers: bool = setting(True, cli=False)

    # Settings that leave the parameters alone: a fine-tuned run may change them
    # (scan_layers changes their layout only: prepare converts them).
    NOT_ARCHITECTURE = ("dropout", "decode", "scan_layers")
    LEGACY = {"scan_layers": False}

    def __post_init__(self):
        validate(self)
        if self.d_model % self.heads:
            raise SettingError("d_model", f"{self.d_model} must be a multiple of --heads "
                                          f"{self.heads}")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def saved_fields(cls, values: dict) -> dict:
    """A saved model config's fields, with LEGACY values for fields it predates."""
    return {**{k: v for k, v in cls.LEGACY.items() if k not in values}, **values}
