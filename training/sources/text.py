"""Text data: random training windows and fixed validation windows of a tokenized corpus
(training/sources/corpus.py: a file or a folder; training/sources/token_cache.py:
memory-mapped tokens).

Batches: tokens int32 [B, T + 1] (inputs are [:, :-1], targets [:, 1:]); evaluation
batches add mask float32 [B] and bytes float32 [B], the UTF-8 bytes of each window's
targets (bits per byte = nats / bytes / ln 2, a unit that compares tokenizers). The
windows of training step s are drawn from (seed, s) alone, so a resumed run sees
exactly the batches of the uninterrupted one.
"""

import numpy as np

from jaxtrain.training.sources import token_cache

EVAL_WINDOWS = 256  # --eval-windows' default: the validation windows an evaluation reads


class TextSource:
    """Training and validation windows of a corpus's tokens (a Source:
    training/sources/base.py), by `tokenizer` (training/sources/tokenizer.py); with
    `path` None, the validation windows of `val_file` alone (an evaluation). Each
    evaluation reads the same `eval_windows` windows (--eval-windows), evenly spaced."""

    def __init__(self, path, tokenizer, context: int, batch_size: int, seed: int,
                 val_file=None, eval_windows: int = EVAL_WINDOWS):
        made = token_cache.tokens(path, tokenizer, val_file)
        self.train, self.val, self.cache = made.train, made.val, made.folder
        need = context + 1
        where = f"--val-file {val_file}" if val_file else f"--data-file {path}"
        if len(self.val) < need:
            share = "" if val_file else " (the last 10% of each file validates)"
            raise ValueError(f"{where} gives {len(self.val)} validation tokens, too short for "
                             f"--context {context}{share}, which needs one window of {need}; "
                             "use more text or a smaller --context")
        if path is not None and len(self.train) < need:
            raise ValueError(f"--data-file {path} gives {len(self.train)} training tokens: too "
                             f"few for --context {context}; use more text or a smaller "
                             "--context")
        self.context, self.batch_size, self.seed = context, batch_size, seed
        self.steps_per_epoch = None  # steps are the unit
        self.class_names = None
        n = min(eval_windows, len(self.val) - context)
        self.eval_starts = np.linspace(0, len(self.val) - need, n).round().astype(np.int64)
        # The UTF-8 bytes each validation window predicts (its targets).
        self.eval_bytes = np.array([tokenizer.token_bytes[self.val[s + 1:s + need]].sum()
                                    for s in self.eval_starts], np.float32)

    def _windows(self, tokens, starts):
        return np.stack([tokens[s:s + self.context + 1] for s in starts]).astype(np.int32)

    def train_batches(self, start_step: int):
        """Batches of steps start_step, start_step + 1, ... (endless)."""
        step = start_step
        while True:
            rng = np.random.default_rng([self.seed, step])
            starts = rng.integers(0, len(self.train) - self.context, self.batch_size)
            yield {"tokens": self._windows(self.train, starts)}  # [B, T + 1]
            step += 1

    @property
    def eval_examples(self) -> int:
        """Validation windows (of `context` predicted tokens each)."""
        return len(self.eval_starts)

    def eval_batches(self, batch_size=None):
        """The fixed validation windows, padded to full batches with mask 0."""
        size = batch_size or self.batch_size
        for i in range(0, len(self.eval_starts), size):
            starts = self.eval_starts[i:i + size]
            n = len(starts)
            yield {"tokens": self._windows(self.val, np.pad(starts, (0, size - n))),
                   "mask": (np.arange(size) < n).astype(np.float32),
                   "bytes": np.pad(self.eval_bytes[i:i + size], (0, size - n))}

    def preview(self):
        return None
