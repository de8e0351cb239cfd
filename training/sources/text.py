"""Character-level text data: a vocabulary from the file, random training windows,
fixed validation windows.

Batches: tokens int32 [B, T + 1] (inputs are [:, :-1], targets [:, 1:]); evaluation
batches add mask float32 [B]. The first 90% of the characters train, the last 10%
validate. The windows of training step s are drawn from (seed, s) alone, so a resumed
run sees exactly the batches of the uninterrupted one.
"""

from pathlib import Path

import numpy as np

TRAIN_FRACTION = 0.9
EVAL_WINDOWS = 256  # fixed validation windows, evenly spaced over the validation text


def read_text(path) -> str:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--data-file {path} does not exist: pass a UTF-8 text file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"--data-file {path} is not UTF-8 text ({e.reason} at byte "
                         f"{e.start}): convert it to UTF-8") from None
    if not text:
        raise ValueError(f"--data-file {path} is empty: pass a text file with content")
    return text


def build_vocab(text: str) -> str:
    """The file's distinct characters, sorted: character i is token i."""
    return "".join(sorted(set(text)))


def encode(text: str, vocab: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(vocab)}
    unknown = sorted(set(text) - index.keys())
    if unknown:
        raise ValueError(f"characters not in the model's vocabulary: {''.join(unknown)!r} "
                         f"({', '.join(f'U+{ord(c):04X}' for c in unknown)}); use only "
                         "characters of the training text")
    return np.array([index[c] for c in text], np.int32)


def decode(tokens, vocab: str) -> str:
    return "".join(vocab[int(t)] for t in tokens)


class TextSource:
    """Train and validation token streams of one text file, cut into windows (a Source:
    training/sources/base.py)."""

    def __init__(self, path, vocab: str, context: int, batch_size: int, seed: int):
        text = read_text(path)
        self.tokens = encode(text, vocab)
        split = int(len(self.tokens) * TRAIN_FRACTION)
        self.train, self.val = self.tokens[:split], self.tokens[split:]
        need = context + 1
        if len(self.val) < need:
            raise ValueError(f"--data-file {path} has {len(text)} characters: too short for "
                             f"--context {context} (the last 10% validates and must hold one "
                             f"window of {need}); use at least {int(np.ceil(need / 0.1))} "
                             "characters or a smaller --context")
        self.context, self.batch_size, self.seed = context, batch_size, seed
        self.steps_per_epoch = None  # steps are the unit
        self.class_names = None
        n = min(EVAL_WINDOWS, len(self.val) - context)
        self.eval_starts = np.linspace(0, len(self.val) - need, n).round().astype(np.int64)

    def _windows(self, tokens, starts):
        return np.stack([tokens[s:s + self.context + 1] for s in starts])  # [B, T + 1]

    def train_batches(self, start_step: int):
        """Batches of steps start_step, start_step + 1, ... (endless)."""
        step = start_step
        while True:
            rng = np.random.default_rng([self.seed, step])
            starts = rng.integers(0, len(self.train) - self.context, self.batch_size)
            yield {"tokens": self._windows(self.train, starts)}
            step += 1

    @property
    def eval_examples(self) -> int:
        """Validation windows (of `context` predicted characters each)."""
        return len(self.eval_starts)

    def eval_batches(self, batch_size=None):
        """The fixed validation windows, padded to full batches with mask 0."""
        size = batch_size or self.batch_size
        for i in range(0, len(self.eval_starts), size):
            starts = self.eval_starts[i:i + size]
            n = len(starts)
            starts = np.pad(starts, (0, size - n))
            yield {"tokens": self._windows(self.val, starts),
                   "mask": (np.arange(size) < n).astype(np.float32)}

    def preview(self):
        return None
