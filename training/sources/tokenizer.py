"""The text tokenizers (`--tokenizer`): characters, a byte-level BPE trained on the run's
training text, or a Hugging Face `tokenizers` file.

A run keeps its tokenizer in its config (DataConfig.vocab for characters, .tokenizer_json
for the others), so every checkpoint rebuilds it; fit also writes <workdir>/tokenizer.json
for other tools. `token_bytes` [V] is each token's length in UTF-8 bytes: bits per byte
of the validation text (training/sources/text.py) are its nats over those bytes.
"""

import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

BPE_TRAIN_BYTES = 64 << 20  # BPE merges are learned from at most this much training text


class OutsideVocabulary(ValueError):
    """Text with characters that a char run's vocabulary lacks."""


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
            codes = ", ".join(f"U+{ord(c):04X}" for c in unknown)
            raise OutsideVocabulary(f"characters not in the model's vocabulary: "
                                    f"{''.join(unknown)!r} ({codes}); use only characters "
                                    "of the training text")
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
        self._fast = None  # tiktoken's twin of a GPT-2-style BPE, made at first use

    def encode(self, text: str) -> np.ndarray:
        return np.array(self.hf.encode(text, add_special_tokens=False).ids, np.int32)

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's tokens, the texts encoded in parallel: by tiktoken where it is this
        tokenizer's exact twin (a byte-level BPE as GPT-2's: 3x faster, 26 against 8.6
        MB/s on 2 cores), else by `tokenizers` (Rust threads both)."""
        if self._fast is None:
            self._fast = _tiktoken_twin(self.hf, "".join(texts)[:1 << 18]) or False
        if self._fast:  # straight into numpy arrays: no list of Python ints
            # A pool per call: threads left idle would keep the command from exiting
            # (cli/main.py joins them).
            with ThreadPoolExecutor(THREADS) as pool:
                return list(pool.map(self._fast.encode_to_numpy, texts))
        return [np.array(e.ids, np.int32)
                for e in self.hf.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, tokens) -> str:
        return self.hf.decode([int(t) for t in tokens], skip_special_tokens=False)


THREADS = os.cpu_count() or 1
# The pre-tokenizer of `tokenizers`' ByteLevel (use_regex) and of GPT-2, in tiktoken's words.
GPT2_SPLIT = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|"""
              r"""\s+""")


def _byte_of_char() -> dict[str, int]:
    """GPT-2's spelling of bytes as characters (a byte-level BPE's alphabet), inverted."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in kept]
    return {**{chr(b): b for b in kept}, **{chr(256 + i): b for i, b in enumerate(moved)}}


def _tiktoken_twin(hf, sample: str):
    """A tiktoken Encoding that tokenizes exactly as `hf`, or None. tiktoken merges the
    pair whose bytes rank lowest; a BPE trained by `tokenizers` (or GPT-2's) numbers its
    merged tokens in merge order, so its ids are those ranks. Only a plain byte-level BPE
    qualifies: no normalizer, GPT-2's split, no prefix space, no added (special) tokens,
    all 256 bytes in its vocabulary, each merge's token numbered after its parts and
    after the merges before it; and the two must agree on `sample`."""
    spec = json.loads(hf.to_str())
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    if (model.get("type") != "BPE" or spec.get("normalizer") or pre.get("type") != "ByteLevel"
            or pre.get("add_prefix_space") or not pre.get("use_regex", True)
            or spec.get("added_tokens") or model.get("dropout")
            or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")
            or model.get("ignore_merges")):
        return None
    byte_of, vocab = _byte_of_char(), model.get("vocab") or {}
    if any(c not in vocab for c in byte_of):  # a byte it cannot spell: tiktoken would panic
        return None
    last = -1
    for merge in model.get("merges") or []:
        a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
        made = vocab.get(a + b)
        if made is None or made <= max(vocab.get(a, -1), vocab.get(b, -1), last):
            return None
        last = made
    try:
        import tiktoken

        ranks = {bytes(byte_of[c] for c in token): i for token, i in vocab.items()
                 if all(c in byte_of for c in token)}
        fast = tiktoken.Encoding("jaxtrain", pat_str=GPT2_SPLIT, mergeable_ranks=ranks,
                                 special_tokens={})
        same = fast.encode_ordinary(sample) == hf.encode(sample, add_special_tokens=False).ids
    except (ImportError, ValueError, KeyError):
        return None
    return fast if same else None


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
