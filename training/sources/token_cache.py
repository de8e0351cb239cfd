"""The token cache: a corpus's tokens, written once into memory-mapped files, and what
else takes a pass over a corpus: the BPEs learned from it, its characters (the char
tokenizer's vocabulary) and its files' training/validation splits.

A corpus's tokens are kept in <cache>/jaxtrain/tokens/<key>/{train,val}.bin (uint16
where the vocabulary fits, else uint32), the key a digest of the sources (path, size,
modification time), the split and the tokenizer: a changed source or another tokenizer
tokenizes again, and nothing else does. A BPE encodes its pieces on all cores, while
the next pieces are read. The small results (a BPE's JSON, the characters, the splits)
are files beside the token folders, keyed the same way, so a second run on an unchanged
corpus reads none of its text.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from jaxtrain.training.host.paths import default_data_dir
from jaxtrain.training.sources.corpus import (
    PIECE,
    TRAIN_FRACTION,
    Part,
    characters,
    parts,
    pieces,
    split_at,
    training_text,
    whole_files,
)
from jaxtrain.training.sources.tokenizer import BPE_TRAIN_BYTES, OutsideVocabulary, train_bpe

FORMAT = 1  # of the cached token files: a new format never reads an old one


def _writer() -> str:
    """A name for this process's files being written, unique across the machines that
    may share the cache (pods often all run as pid 1)."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclasses.dataclass
class Tokens:
    """A corpus's tokens, memory-mapped: train and val are uint16/uint32 arrays."""
    train: np.ndarray
    val: np.ndarray
    folder: Path


def cache_folder() -> Path:
    return Path(default_data_dir()) / "tokens"


def _fingerprint(part_list: list[Part]) -> list:
    return [[str(p.path.resolve()), p.start, p.end, p.path.stat().st_mtime_ns]
            for p in part_list]


def _entry(kind: str, spec: dict) -> Path:
    """Where the cache keeps a `kind` made from `spec` (what it depends on)."""
    key = hashlib.sha256(json.dumps({"format": FORMAT, **spec}, sort_keys=True).encode())
    return cache_folder() / f"{kind}-{key.hexdigest()[:24]}.json"


def _keep(path: Path, text: str) -> None:
    """Writes the cache file `path`, atomically: a reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{_writer()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def char_vocab(data_file, val_file=None) -> str:
    """The corpus's distinct characters, sorted (the char tokenizer's vocabulary), kept
    in the cache: a second run on the same files reads none of them."""
    path = _entry("chars", {"files": _fingerprint(whole_files(data_file, val_file))})
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["characters"]
    made = characters(data_file, val_file)
    _keep(path, json.dumps({"characters": made}))
    return made


def corpus_parts(data_file, val_file=None) -> tuple[list[Part], list[Part]]:
    """corpus.parts, each file's split kept in the cache (finding it counts the
    characters of the whole file)."""
    if val_file is not None:  # whole files: no split to find
        return parts(data_file, val_file)
    path = _entry("splits", {"files": _fingerprint(whole_files(data_file)),
                             "fraction": TRAIN_FRACTION})
    known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    found = len(known)

    def cut(file: Path, fraction: float) -> int:
        key = str(file.resolve())
        if key not in known:
            known[key] = split_at(file, fraction)
        return known[key]

    made = parts(data_file, cut=cut)
    if len(known) > found:
        _keep(path, json.dumps(known))
    return made


def tokens(data_file, tokenizer, val_file=None) -> Tokens:
    """The corpus's tokens from the cache, tokenizing them first if they are not there;
    with `data_file` None, those of `val_file` alone (train empty: an evaluation)."""
    train, val = corpus_parts(data_file, val_file)
    spec = {"format": FORMAT, "train": _fingerprint(train), "val": _fingerprint(val),
            "tokenizer": hashlib.sha256(
                (getattr(tokenizer, "json", None) or tokenizer.vocab).encode()).hexdigest()}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_folder() / key
    if not (folder / "meta.json").is_file():
        _write(folder, train, val, tokenizer, data_file, val_file)
    meta = json.loads((folder / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    return Tokens(*(_open(folder / f"{name}.bin", dtype) for name in ("train", "val")), folder)


def trained_bpe(data_file, vocab_size: int, val_file=None) -> str:
    """A byte-level BPE learned from the corpus's training text (its first
    BPE_TRAIN_BYTES), as JSON, kept in the cache beside the tokens: a second run on the
    same sources trains none."""
    from tokenizers import __version__ as version

    spec = {"train": _fingerprint(corpus_parts(data_file, val_file)[0]),
            "vocab_size": vocab_size,
            "bytes": BPE_TRAIN_BYTES, "tokenizers": version}
    path = _entry("bpe", spec)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    made = train_bpe(training_text(data_file, val_file, BPE_TRAIN_BYTES), vocab_size)
    _keep(path, made)
    return made


def _open(path: Path, dtype) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype, mode="r")


def _write(folder: Path, train, val, tokenizer, data_file, val_file) -> None:
    """Tokenizes the parts into folder/{train,val}.bin, written aside and renamed into
    place, so a reader sees all of them or none (and two writers do the work twice)."""
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    total = sum(p.end - p.start for p in train + val)
    where = {"train": f"--data-file {data_file}",
             "val": f"--val-file {val_file}" if val_file else f"--data-file {data_file}"}
    if total == 0:
        raise ValueError(f"{where['val' if data_file is None else 'train']} is empty: pass a "
                         "text file with content")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.tmp-{_writer()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    start = time.perf_counter()
    bar = _Progress(total, total > 4 * PIECE)
    try:
        counts = {}
        for name, part_list in (("train", train), ("val", val)):
            with open(tmp / f"{name}.bin", "wb") as out:
                try:
                    counts[name] = _tokenize(part_list, tokenizer, out, dtype, bar)
                except OutsideVocabulary as e:  # a resumed or evaluated run's new text
                    raise OutsideVocabulary(f"{where[name]}: {e}") from None
        seconds = time.perf_counter() - start
        bar.close(seconds)
        meta = {"dtype": np.dtype(dtype).name, "train_tokens": counts["train"],
                "val_tokens": counts["val"], "bytes": total, "seconds": round(seconds, 3),
                "tokenizer": tokenizer.name,
                "sources": [str(p.path) for p in train] + [str(p.path) for p in val]}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            tmp.rename(folder)
        except OSError:  # another process wrote it first
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _groups(part_list: list[Part], size: int):
    """The parts' pieces in groups of about `size` bytes: (texts, bytes)."""
    group, n = [], 0
    for part in part_list:
        for text in pieces(part):
            group.append(text)
            n += len(text.encode("utf-8"))
            if n >= size:
                yield group, n
                group, n = [], 0
    if group:
        yield group, n


def _tokenize(part_list: list[Part], tokenizer, out, dtype, bar, batch: int = 8 << 20) -> int:
    """Writes the parts' tokens to `out`; returns how many. Groups of about `batch` bytes
    are encoded by a thread (a BPE's on all cores) while the next group is read, so a
    folder of small files encodes as fast as one big file."""
    encode = getattr(tokenizer, "encode_many", None) or (
        lambda texts: [tokenizer.encode(t) for t in texts])
    n = 0

    def write(future, size):
        nonlocal n
        for ids in future.result():
            ids.astype(dtype).tofile(out)
            n += len(ids)
        bar.update(size)

    with ThreadPoolExecutor(1) as encoder:
        pending = None
        for group, size in _groups(part_list, batch):
            future = encoder.submit(encode, group)
            if pending:
                write(*pending)
            pending = (future, size)
        if pending:
            write(*pending)
    return n


class _Progress:
    """A tqdm bar in MB/s on a terminal; one closing line on stderr where the corpus is
    more than a few pieces."""

    def __init__(self, total: int, shown: bool):
        self.total, self.shown, self.bar = total, shown, None
        if shown and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1 << 20,
                            desc="tokenizing", file=sys.stderr, leave=False)

    def update(self, n: int):
        if self.bar is not None:
            self.bar.update(n)

    def close(self, seconds: float):
        if self.bar is not None:
            self.bar.close()
        if self.shown:
            mb = self.total / 1e6
            print(f"tokenized {mb:,.1f} MB in {seconds:.1f} s ({mb / max(seconds, 1e-9):,.1f} "
                  "MB/s), kept for later runs", file=sys.stderr)
