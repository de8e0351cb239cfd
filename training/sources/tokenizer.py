"""The text tokenizers (`--tokenizer`): characters, a byte-level BPE trained on the run's
training text, or a Hugging Face `tokenizers` file.

A run keeps its tokenizer in its config (DataConfig.vocab for characters, .tokenizer_json
for the others), so every checkpoint rebuilds it; fit also writes <workdir>/tokenizer.json
for other tools. `token_bytes` [V] is each token's length in UTF-8 bytes: bits per byte
of the validation text (training/sources/text.py) are its nats over those bytes.
"""

import functools
import json
from pathlib import Path

import numpy as np

BPE_TRAIN_BYTES = 64 << 20  # BPE merges are learned from at most this much training text


class CharTokenizer:
    """Token i is vocab[i]: one token per character of the training text's alphabet."""

    name, unit = "char", "char"

    def __init__(self, vocab: str):
        self.vocab = vocab
        self.vocab_size = len(vocab)
        self.token_bytes = np.array([len(c.encode("utf-8")) for c in vocab], np.int64)
        codes = np.array([ord(c) for c in vocab], np.int64)
        # Code point -> token, -1 for characters outside the vocabulary.
        self._table = np.full(codes.max() + 1, -1, np.int64)
        self._table[codes] = np.arange(len(vocab))

    def encode(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.int64)
        inside = codes < len(self._table)
        tokens = np.where(inside, self._table[np.where(inside, codes, 0)], -1)
        if (tokens < 0).any():
            unknown = sorted({chr(c) for c in codes[tokens < 0]})
            raise ValueError(f"characters not in the model's vocabulary: {''.join(unknown)!r} "
                             f"({', '.join(f'U+{ord(c):04X}' for c in unknown)}); use only "
                             "characters of the training text")
        return tokens.astype(np.int32)

    def decode(self, tokens) -> str:
        return "".join(self.vocab[int(t)] for t in tokens)


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer (the byte-level BPE of --tokenizer bpe, or a
    user's file), rebuilt from its JSON."""

    unit = "token"

    def __init__(self, tokenizer_json: str, name: str = "bpe"):
        from tokenizers import Tokenizer

        self.name, self.json = name, tokenizer_json
        self.hf = Tokenizer.from_str(tokenizer_json)
        self.vocab_size = self.hf.get_vocab_size()
        self.token_bytes = _token_bytes(self.hf)

    def encode(self, text: str) -> np.ndarray:
        return np.array(self.hf.encode(text, add_special_tokens=False).ids, np.int32)

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's tokens; the texts are encoded in parallel (Rust threads)."""
        return [np.array(e.ids, np.int32)
                for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, tokens) -> str:
        return self.hf.decode([int(t) for t in tokens], skip_special_tokens=False)


def _token_bytes(hf) -> np.ndarray:
    """Each token's UTF-8 bytes: a byte-level tokenizer's tokens are spelled one
    character a byte (GPT-2's byte alphabet); other tokenizers' tokens are decoded alone
    (approximate where a decoder adds spaces between tokens)."""
    vocab = hf.get_vocab()
    out = np.zeros(hf.get_vocab_size(), np.int64)
    byte_level = "ByteLevel" in json.dumps(json.loads(hf.to_str()).get("decoder"))
    for token, i in vocab.items():
        if i < len(out):
            out[i] = len(token) if byte_level else len(hf.decode([i]).encode("utf-8"))
    return out


@functools.lru_cache(maxsize=8)
def tokenizer_of(vocab: str | None, tokenizer_json: str | None, name: str = "char"):
    """The tokenizer a run's config holds (DataConfig: vocab or tokenizer_json)."""
    if tokenizer_json is not None:
        return HFTokenizer(tokenizer_json, "bpe" if name == "bpe" else "file")
    return CharTokenizer(vocab)


def train_bpe(texts, vocab_size: int) -> str:
    """A byte-level BPE of `vocab_size` tokens (its 256 bytes first, then merges learned
    from `texts`, an iterable of strings), as JSON. Offline: nothing is downloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer.to_str()


def read_tokenizer_file(path) -> str:
    """A `tokenizers` JSON file's text, checked to load."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        from tokenizers import Tokenizer

        Tokenizer.from_str(text)
    except Exception as e:  # OSError, UnicodeDecodeError, or what tokenizers raises
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"--tokenizer {path} does not load as a Hugging Face tokenizers "
                         f"file ({reason}): pass char, bpe or a tokenizer.json") from None
    return text
