"""A character-level language model with the Transformer of models/transformer.py.

Token i is the i-th character of the run's vocabulary (the training file's distinct
characters, saved with the run). Shapes: B batch, T context, V vocabulary.
"""

import math

import jax.numpy as jnp
import numpy as np
import optax

from jaxtrain.models.decoding import continue_text
from jaxtrain.models.family import Family
from jaxtrain.models.transformer import (
    TransformerConfig,
    networks,
    train_flops_per_token,
)

# Characters generated for TensorBoard at each evaluation, at most the context: all
# from the key/value cache, one compiled scan (past the context each character would
# rerun the whole window: baby GPT's 200 characters took 0.7 s an evaluation, not 0.1).
PREVIEW_CHARS = 200


class CharLMFamily(Family):
    """Character-level language model; `vocab` holds the characters, token i = vocab[i]."""

    sample_options = ("temperature", "top_k", "top_p")
    units = {"train_loss": "nats/char", "test_loss": "nats/char"}

    def __init__(self, config: TransformerConfig, vocab: str, precision: str = "float32"):
        if not vocab or config.vocab_size != len(vocab) or config.output_size != len(vocab):
            raise ValueError(f"a text model needs vocab_size = output_size = {len(vocab or '')} "
                             f"(its vocabulary), got {config.vocab_size}/{config.output_size}")
        self.config, self.vocab = config, vocab
        self.attention, self.model, self.decoder = networks(config, precision)
        self.tokens_per_example = config.context
        self.flops_per_example = config.context * train_flops_per_token(config)

    def init(self, rng, batch_size):
        tokens = jnp.zeros((batch_size, self.config.context), jnp.int32)
        return self.model.init(rng, tokens)["params"]

    def _token_nll(self, params, tokens, rngs=None, ids=None):
        logits = self.model.apply({"params": params}, tokens[:, :-1], deterministic=rngs is None,
                                  rngs=rngs, ids=ids)  # [B, T, V]
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])  # [B, T]

    def train_loss(self, params, batch, rng):
        loss = self._token_nll(params, batch["tokens"], {"dropout": rng}, batch["row"]).mean()
        return loss, {"bits_per_char": loss / math.log(2)}

    def eval_sums(self, params, batch, rng):
        """Sums over the real windows' characters; the loss is nats per character."""
        nll = self._token_nll(params, batch["tokens"]).sum(-1)  # [B]
        return {"loss": jnp.sum(nll * batch["mask"]),
                "count": jnp.sum(batch["mask"]) * self.config.context}

    def finalize(self, metrics):
        return {**metrics, "bits_per_char": metrics["loss"] / math.log(2)}

    def sample(self, params, prompt: np.ndarray, rng, length: int = 500, temperature=1.0,
               top_k=None, top_p=None) -> np.ndarray:
        """`length` tokens following the tokens `prompt` [P] (see decoding.continue_text)."""
        return continue_text(self.model, self.decoder, params, prompt, length, rng,
                             temperature, top_k, top_p)

    def epoch_text(self, params, rng):
        """A continuation of a newline (else of the first character), from a fixed key,
        so evaluations compare; PREVIEW_CHARS long, or the context."""
        start = self.vocab.index("\n") if "\n" in self.vocab else 0
        length = min(PREVIEW_CHARS, self.config.context)
        tokens = self.sample(params, np.array([start]), rng, length)
        return "".join(self.vocab[int(t)] for t in tokens)
