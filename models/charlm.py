"""A language model of text with the Transformer of models/transformer.py, by characters
or by the tokens of a BPE (the run's tokenizer: training/sources/tokenizer.py).

Shapes: B batch, T context, V vocabulary.
"""

import math

import jax.numpy as jnp
import numpy as np
import optax

from jaxtrain.models.decoding import Clock, continue_text
from jaxtrain.models.family import Family
from jaxtrain.models.transformer import (
    TransformerConfig,
    init_params,
    networks,
)

# Tokens generated for TensorBoard at each evaluation, at most the context: all from
# the key/value cache, one compiled scan (past the context each token would rerun the
# whole window: baby GPT's 200 characters took 0.7 s an evaluation, not 0.1).
PREVIEW_CHARS = 200


class CharLMFamily(Family):
    """Language model of text; `tokenizer` turns text into tokens and back (encode,
    decode, vocab_size, unit: "char" or "token", token_bytes)."""

    sample_options = ("temperature", "top_k", "top_p")

    def __init__(self, config: TransformerConfig, tokenizer, precision: str = "float32"):
        n = tokenizer.vocab_size
        if config.vocab_size != n or config.output_size != n:
            raise ValueError(f"a text model needs vocab_size = output_size = {n} (its "
                             f"tokenizer's), got {config.vocab_size}/{config.output_size}")
        self.config, self.tokenizer = config, tokenizer
        self.units = {"train_loss": f"nats/{tokenizer.unit}",
                      "test_loss": f"nats/{tokenizer.unit}"}
        self.attention, self.model, self.decoder = networks(config, precision)
        self.tokens_per_example = config.context

    def init(self, rng, batch_size):
        tokens = jnp.zeros((batch_size, self.config.context), jnp.int32)
        return init_params(self.model, rng, tokens)

    def _token_nll(self, params, tokens, rngs=None, ids=None):
        logits = self.model.apply({"params": params}, tokens[:, :-1], deterministic=rngs is None,
                                  rngs=rngs, ids=ids)  # [B, T, V]
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])  # [B, T]

    def train_loss(self, params, batch, rng):
        loss = self._token_nll(params, batch["tokens"], {"dropout": rng}, batch["row"]).mean()
        return loss, ({"bits_per_char": loss / math.log(2)}
                      if self.tokenizer.unit == "char" else {})

    def eval_sums(self, params, batch, rng):
        """Sums over the real windows' tokens; the loss is nats per token, and the bytes
        the windows predict give bits per byte."""
        nll = self._token_nll(params, batch["tokens"]).sum(-1)  # [B]
        return {"loss": jnp.sum(nll * batch["mask"]),
                "bytes": jnp.sum(batch["bytes"] * batch["mask"]),
                "count": jnp.sum(batch["mask"]) * self.config.context}

    def finalize(self, metrics):
        metrics = dict(metrics)
        per_byte = metrics["loss"] / metrics.pop("bytes") / math.log(2)  # means per token
        return {**metrics, **({"bits_per_char": metrics["loss"] / math.log(2)}
                              if self.tokenizer.unit == "char" else {}),
                "bits_per_byte": per_byte}

    def sample(self, params, prompt: np.ndarray, rng, length: int = 500, temperature=1.0,
               top_k=None, top_p=None, clock: Clock | None = None) -> np.ndarray:
        """`length` tokens following the tokens `prompt` [P] (see decoding.continue_text;
        a `clock` gets its compile and generation seconds apart)."""
        return continue_text(self.model, self.decoder, params, prompt, length, rng,
                             temperature, top_k, top_p, clock)

    def epoch_text(self, params, rng):
        """A continuation of a newline (else of token 0), from a fixed key, so evaluations
        compare; PREVIEW_CHARS tokens long, or the context."""
        try:
            start = self.tokenizer.encode("\n")[:1]
        except ValueError:  # a char vocabulary without a newline
            start = np.zeros(0, np.int32)
        start = start if len(start) else np.array([0], np.int32)
        length = min(PREVIEW_CHARS, self.config.context)
        return self.tokenizer.decode(self.sample(params, start, rng, length))
