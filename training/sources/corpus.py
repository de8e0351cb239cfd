"""Text corpora of any size: a file or a folder of .txt files, split, and read in pieces.

The split: the last 10% of each file's characters validate and the rest trains, unless
a --val-file (a file or folder) validates and all of --data-file trains. Text is read in
pieces of about 1 MB cut at line ends, so no corpus is ever whole in memory; the pieces
are tokenized once into the token cache (training/sources/token_cache.py).
"""

import codecs
import dataclasses
import functools
from pathlib import Path

import numpy as np

from jaxtrain.training.sources.registry import Dataset, register

TRAIN_FRACTION = 0.9
PIECE = 1 << 20  # bytes of text a piece (cut at the last line end inside)


def text_files(path, flag="--data-file") -> list[Path]:
    """The .txt files of a folder (recursively, sorted), or the file itself."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise ValueError(f"{flag} {path} is a folder without .txt files: put UTF-8 text "
                             "in files ending in .txt, or pass one file")
        return files
    if not path.is_file():
        raise ValueError(f"{flag} {path} does not exist: pass a UTF-8 text file or a folder "
                         "of .txt files")
    return [path]


@dataclasses.dataclass(frozen=True)
class Part:
    """The bytes [start, end) of a file: a training or validation share of it, and the
    flag that named the file (for errors)."""
    path: Path
    start: int
    end: int
    flag: str = "--data-file"


def _chars_before(data: np.ndarray) -> np.ndarray:
    """Per byte, whether it starts a UTF-8 character (not a continuation byte)."""
    return (data & 0xC0) != 0x80


def split_at(path: Path, fraction: float) -> int:
    """The byte offset of character int(n * fraction) of the file's n characters (the
    character split of the whole text), found in 1 MB blocks without decoding it; kept
    per file version, as a command asks for the parts more than once."""
    stat = path.stat()
    return _split_at(path.resolve(), fraction, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1 << 14)
def _split_at(path: Path, fraction: float, size: int, mtime_ns: int) -> int:
    if size == 0:
        return 0
    data = np.memmap(path, np.uint8, mode="r")
    starts = range(0, size, PIECE)
    counts = [int(np.count_nonzero(_chars_before(data[i:i + PIECE]))) for i in starts]
    k = int(sum(counts) * fraction)  # characters before the split
    for i, n in zip(starts, counts):
        if k < n:
            return i + int(np.flatnonzero(_chars_before(data[i:i + PIECE]))[k])
        k -= n
    return size


def whole_files(data_file, val_file=None) -> list[Part]:
    """Every file of the corpus, whole: --data-file's (none when None: an evaluation on
    --val-file alone), then --val-file's (one inside the --data-file folder is held out
    of it)."""
    val = text_files(val_file, "--val-file") if val_file is not None else []
    held = {p.resolve() for p in val}  # never trained on, if inside --data-file
    train = [] if data_file is None else [p for p in text_files(data_file)
                                          if p.resolve() not in held]
    if val_file is not None and data_file is not None and not train:
        raise ValueError(f"--data-file {data_file} has no text left to train on once "
                         f"--val-file {val_file} is held out")
    return ([Part(p, 0, p.stat().st_size) for p in train]
            + [Part(p, 0, p.stat().st_size, "--val-file") for p in val])


def parts(data_file, val_file=None, cut=split_at) -> tuple[list[Part], list[Part]]:
    """(training parts, validation parts) of the corpus; `cut(path, fraction)` finds the
    byte where a file's validation share starts (a cache may know it)."""
    files = whole_files(data_file, val_file)
    if val_file is not None:
        return ([f for f in files if f.flag == "--data-file"],
                [f for f in files if f.flag == "--val-file"])
    train, val = [], []
    for f in files:
        at = cut(f.path, TRAIN_FRACTION)
        train.append(Part(f.path, 0, at))
        val.append(Part(f.path, at, f.end))
    return train, val


def pieces(part: Part):
    """The part's text in pieces of about PIECE bytes, each ending at a line end where
    one is near; a non-UTF-8 byte is one line naming the file, the flag that named it and
    the byte's offset in the file."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(part.path, "rb") as f:
        f.seek(part.start)
        at, rest, offset = part.start, b"", part.start  # offset: the block's first byte
        while True:
            chunk = f.read(min(PIECE, part.end - at)) if at < part.end else b""
            at += len(chunk)
            block, rest = rest + chunk, b""
            last = at >= part.end or not chunk
            if not last:
                cut = block.rfind(b"\n") + 1
                if cut > len(block) // 2:
                    block, rest = block[:cut], block[cut:]
            held = decoder.getstate()[0]  # a character's first bytes, left by the last block
            try:
                text = decoder.decode(block, final=last)
            except UnicodeDecodeError as e:  # e.start counts from the held bytes
                raise ValueError(not_utf8(part, offset - len(held) + e.start, e)) from None
            offset += len(block)
            if text:
                yield text
            if last:
                return


def not_utf8(part: Part, at: int, error: UnicodeDecodeError) -> str:
    """The one line for a file that is not UTF-8: its first bad byte, by offset."""
    byte = error.object[error.start]
    return (f"{part.flag} {part.path} is not UTF-8 text: byte 0x{byte:02x} at offset {at} "
            f"(counting from 0; {error.reason}): convert it to UTF-8, e.g. with iconv")


def characters(data_file, val_file=None) -> str:
    """The corpus's distinct characters, sorted (the char tokenizer's vocabulary): those
    of all its files, training and validation."""
    seen = set()
    for part in whole_files(data_file, val_file):
        for text in pieces(part):
            seen.update(np.unique(np.frombuffer(text.encode("utf-32-le"), np.uint32)).tolist())
    if not seen:
        raise ValueError(f"--data-file {data_file} is empty: pass a text file with content")
    return "".join(chr(c) for c in sorted(seen))


def training_text(data_file, val_file=None, limit: int | None = None):
    """The training split's pieces, up to `limit` bytes (a BPE learns its merges from them)."""
    seen = 0
    for part in parts(data_file, val_file)[0]:
        for text in pieces(part):
            yield text
            seen += len(text)
            if limit is not None and seen >= limit:
                return


# Read by training/sources/text.py (windows of its tokens), not into image arrays.
register(Dataset("text", "a language model of --data-file (needs --model transformer)",
                 task="text"))
