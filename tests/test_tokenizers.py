"""Text beyond one file of characters: corpora (folders, the split, the memory-mapped token
cache), the tokenizers (char, a byte-level BPE, a tokenizers file), bits per byte, and a
BPE run through the real CLI."""

import json

import numpy as np
import pytest
from conftest import assert_one_line_error, cli

from jaxtrain.training.commands import export
from jaxtrain.training.settings.config import DataConfig
from jaxtrain.training.sources import corpus, token_cache
from jaxtrain.training.sources.text import TextSource
from jaxtrain.training.sources.tokenizer import (
    CharTokenizer,
    HFTokenizer,
    OutsideVocabulary,
    read_tokenizer_file,
    train_bpe,
)

PROSE = "Der Bär schläft. The bear sleeps; l'ours dort — 熊が寝ている.\n"


@pytest.fixture
def folder(tmp_path):
    """Two .txt files of different lengths (multi-byte characters), and a file that is
    not .txt, which is left out."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text(PROSE * 20, encoding="utf-8")
    (root / "sub" / "b.txt").write_text(("ab\n" * 50) + "ü" * 30, encoding="utf-8")
    (root / "notes.md").write_text("not read", encoding="utf-8")
    return root


def test_each_file_splits_at_90_percent_of_its_characters(folder):
    train, val = corpus.parts(folder)
    assert [p.path.name for p in train] == ["a.txt", "b.txt"]
    for t, v in zip(train, val):
        text = t.path.read_text(encoding="utf-8")
        head = t.path.read_bytes()[t.start:t.end].decode("utf-8")
        tail = v.path.read_bytes()[v.start:v.end].decode("utf-8")
        assert head + tail == text and len(head) == int(len(text) * 0.9)
    assert corpus.characters(folder) == "".join(sorted(set(PROSE + "ab\nü")))


def test_pieces_cut_at_line_ends_and_rejoin(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "PIECE", 64)
    path = tmp_path / "t.txt"
    text = "".join(f"line {i} é 熊\n" for i in range(200))
    path.write_text(text, encoding="utf-8")
    pieces = list(corpus.pieces(corpus.Part(path, 0, path.stat().st_size)))
    assert "".join(pieces) == text and len(pieces) > 10
    assert all(p.endswith("\n") for p in pieces)


def test_tokens_are_cached_memory_mapped_and_redone_when_a_source_changes(folder):
    tokenizer = CharTokenizer(corpus.characters(folder))
    first = token_cache.tokens(folder, tokenizer)
    assert isinstance(first.train, np.memmap) and first.train.dtype == np.uint16
    text = "".join((folder / name).read_text(encoding="utf-8") for name in ("a.txt", "sub/b.txt"))
    assert len(first.train) + len(first.val) == len(text)  # one token a character
    written = (first.folder / "train.bin").stat().st_mtime_ns
    again = token_cache.tokens(folder, tokenizer)
    assert again.folder == first.folder
    assert (again.folder / "train.bin").stat().st_mtime_ns == written  # read, not redone
    (folder / "a.txt").write_text(PROSE * 21, encoding="utf-8")
    changed = token_cache.tokens(folder, tokenizer)
    assert changed.folder != first.folder and len(changed.train) > len(first.train)
    # A --val-file validates instead: all of --data-file trains.
    held = token_cache.tokens(folder / "a.txt", tokenizer, val_file=folder / "sub" / "b.txt")
    assert len(held.train) == len(PROSE * 21) and len(held.val) == 180
    inside = token_cache.tokens(folder, tokenizer, val_file=folder / "sub" / "b.txt")
    assert len(inside.train) == len(PROSE * 21)  # a --val-file inside the folder: held out


def test_characters_and_splits_are_cached_and_found_again_when_a_file_changes(folder,
                                                                               monkeypatch):
    """A second run on the same files reads none of them for its vocabulary or its split
    (each a pass over every byte); a changed file is read again."""
    vocab = token_cache.char_vocab(folder)
    assert vocab == corpus.characters(folder)
    made = token_cache.corpus_parts(folder)
    assert made == corpus.parts(folder)
    assert len(list(token_cache.cache_folder().glob("chars-*.json"))) >= 1

    def no_pass(*args):
        raise AssertionError("a pass over the corpus")

    with monkeypatch.context() as m:
        m.setattr(token_cache, "characters", no_pass)
        m.setattr(token_cache, "split_at", no_pass)
        assert token_cache.char_vocab(folder) == vocab
        assert token_cache.corpus_parts(folder) == made
        tokenizer = CharTokenizer(vocab)
        assert len(token_cache.tokens(folder, tokenizer).val) > 0  # tokenized: no split pass
        assert token_cache.tokens(folder, tokenizer).folder.is_dir()
    (folder / "sub" / "b.txt").write_text("xyz\n" * 40, encoding="utf-8")
    assert token_cache.char_vocab(folder) == "".join(sorted(set(PROSE + "xyz\n")))
    assert token_cache.corpus_parts(folder) == corpus.parts(folder)
    # A --val-file's characters count, and whole files need no split.
    (folder / "v.txt").write_text("Ω\n", encoding="utf-8")
    assert "Ω" in token_cache.char_vocab(folder / "a.txt", folder / "v.txt")
    assert "x" not in token_cache.char_vocab(folder / "a.txt", folder / "v.txt")


def test_an_evaluation_on_a_val_file_reads_it_alone(folder, tmp_path):
    """`eval --val-file F` tokenizes F only (the training text may be gone), and a char
    run's characters F lacks are one line naming --val-file."""
    val = folder / "sub" / "b.txt"
    source = TextSource(None, CharTokenizer(corpus.characters(folder)), 8, 4, 0, val)
    assert len(source.train) == 0 and len(source.val) == len(val.read_text(encoding="utf-8"))
    assert source.eval_examples > 0
    other = tmp_path / "other.txt"
    other.write_text("ab Ω\n" * 30, encoding="utf-8")
    with pytest.raises(OutsideVocabulary, match=rf"^--val-file {other}: characters not in "
                                                r"the model's vocabulary: 'Ω' \(U\+03A9\)"):
        TextSource(None, CharTokenizer(corpus.characters(folder)), 8, 4, 0, other)


def test_resume_keeps_a_runs_validation_text(tmp_path):
    """resume --val-file: the run's own file, or where it is now if it moved; another
    (or one for a run validated by 10% of each file) is one line."""
    from types import SimpleNamespace

    from jaxtrain.training.commands.prepare import check_val_file

    val, other = tmp_path / "val.txt", tmp_path / "other.txt"
    val.write_text("v"), other.write_text("o")
    run = SimpleNamespace(data=DataConfig(dataset="text", data_file="t.txt", val_file=str(val)))
    check_val_file(run, None, "w")
    check_val_file(run, tmp_path / "." / "val.txt", "w")  # the same file
    with pytest.raises(ValueError, match=rf"^--val-file {other}: the run in w validates on "
                                         rf"{val}; a resumed run keeps its validation text"):
        check_val_file(run, other, "w")
    split = SimpleNamespace(data=DataConfig(dataset="text", data_file="t.txt"))
    with pytest.raises(ValueError, match="validates on the last 10% of each --data-file"):
        check_val_file(split, val, "w")
    val.unlink()  # moved: the new place is taken
    check_val_file(run, other, "w")


def test_a_large_vocabulary_is_kept_in_uint32(tmp_path):
    class Wide(CharTokenizer):  # a char tokenizer whose ids pass 2**16
        def encode(self, text):
            return super().encode(text) + 70_000

    path = tmp_path / "t.txt"
    path.write_text("abc" * 100)
    wide = Wide("abc")
    wide.vocab_size = 70_003
    made = token_cache.tokens(path, wide)
    assert made.train.dtype == np.uint32 and int(made.train[0]) == 70_000


@pytest.mark.parametrize("make, match", [
    (lambda root: None, "without .txt files"),
    (lambda root: (root / "x.txt").write_bytes(b"ok\n\xff\xfe"), "x.txt is not UTF-8"),
    (lambda root: (root / "x.txt").write_text(""), "is empty"),
])
def test_bad_corpora_name_the_file(tmp_path, make, match):
    root = tmp_path / "c"
    root.mkdir()
    make(root)
    with pytest.raises(ValueError, match=match):
        TextSource(root, CharTokenizer("ok\n"), 4, 2, 0)


@pytest.mark.parametrize("at", [5, corpus.PIECE + 4])
def test_a_non_utf8_byte_is_named_by_its_offset_and_flag(tmp_path, at):
    """The first bad byte's offset in the file, past the first 1 MB piece too (there a
    character's first byte ends the piece and waits in the decoder), and the flag that
    named the file."""
    good = tmp_path / "good.txt"
    good.write_text("ok\n" * 200, encoding="utf-8")
    head = "é".encode() if at < corpus.PIECE else b"a" * (corpus.PIECE - 1) + "é".encode()
    bad = tmp_path / "bad.txt"
    bad.write_bytes(head + b"x" * (at - len(head)) + b"\xff" + b"tail\n" * 50)
    assert bad.read_bytes()[at] == 0xFF and bad.read_bytes()[:at].decode("utf-8")
    for data, val, flag in ((bad, None, "--data-file"), (good, bad, "--val-file")):
        for read in (lambda: corpus.characters(data, val),
                     lambda: TextSource(data, CharTokenizer("oktail\nxaé"), 4, 2, 0, val)):
            with pytest.raises(ValueError) as e:
                read()
            assert str(e.value).startswith(f"{flag} {bad} is not UTF-8 text: byte 0xff at "
                                           f"offset {at} (counting from 0; invalid start byte)")


def test_bpe_encodes_any_text_and_counts_its_bytes():
    bpe = HFTokenizer(train_bpe([PROSE * 50], 300))
    assert 256 < bpe.vocab_size <= 300
    for text in (PROSE, "never seen: ∮ 🙂 \t\x00 ẞ"):  # byte fallback: nothing unknown
        ids = bpe.encode(text)
        assert bpe.decode(ids) == text
        assert bpe.token_bytes[ids].sum() == len(text.encode("utf-8"))
    assert len(bpe.encode(PROSE)) < len(PROSE)  # merges learned from the text


def test_the_fast_encoder_is_an_exact_twin_or_not_used():
    """tiktoken encodes a GPT-2-style BPE 3x faster; it is used only where it gives the
    same tokens, and a BPE with a normalizer keeps `tokenizers`' own encoder."""
    from tokenizers import Tokenizer, normalizers

    bpe = HFTokenizer(train_bpe([PROSE * 50, "numbers 12345, 'quotes' and\n\n  spaces"], 400))
    texts = [PROSE * 3, "unseen ∮ 🙂 12 345 it's  \n\n\t x", "  leading spaces"]
    fast = bpe.encode_many(texts)
    assert bpe._fast  # the twin was made
    for text, ids in zip(texts, fast):
        assert ids.tolist() == bpe.encode(text).tolist()
    special = Tokenizer.from_str(bpe.json)  # an added token tiktoken would split
    special.add_special_tokens(["<|endoftext|>"])
    special = HFTokenizer(special.to_str())
    text = "the end<|endoftext|>the start"
    assert [t.tolist() for t in special.encode_many([text])] == [special.encode(text).tolist()]
    assert special._fast is False
    hf = bpe.hf
    hf.normalizer = normalizers.Lowercase()
    lower = HFTokenizer(hf.to_str())
    assert [t.tolist() for t in lower.encode_many(["ABC abc"])] == [lower.encode("abc abc")
                                                                    .tolist()]
    assert lower._fast is False


def test_validation_windows_know_the_bytes_they_predict(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(PROSE * 30, encoding="utf-8")
    chars = CharTokenizer(corpus.characters(path))
    bpe = HFTokenizer(train_bpe(corpus.training_text(path), 320))
    for tokenizer in (chars, bpe):
        source = TextSource(path, tokenizer, 8, 4, 0)
        batch = next(source.eval_batches())
        for tokens, n in zip(batch["tokens"], batch["bytes"]):
            assert n == len(tokenizer.decode(tokens[1:]).encode("utf-8"))


def test_a_tokenizer_file_that_does_not_load_is_one_line(tmp_path):
    bad = tmp_path / "tok.json"
    bad.write_text('{"model": 3}')
    with pytest.raises(ValueError, match="does not load as a Hugging Face tokenizers file"):
        read_tokenizer_file(bad)
    good = tmp_path / "good.json"
    good.write_text(train_bpe(["hello world\n" * 20], 270))
    loaded = HFTokenizer(read_tokenizer_file(good))
    assert loaded.decode(loaded.encode("hello, wörld")) == "hello, wörld"


def test_runs_saved_before_tokenizers_load_as_char():
    saved = {"dataset": "text", "data_dir": "d", "download": True, "data_file": "t.txt",
             "test_fraction": 0.1, "vocab": "ab\n", "class_names": None}  # 2026-11-30's keys
    data = DataConfig(**saved)
    assert data.tokenizer == "char" and data.tokenizer_json is None
    assert data.text_tokenizer().decode(data.text_tokenizer().encode("ba\n")) == "ba\n"


TEXT_TINY = ["--model", "transformer", "--dataset", "text", "--layers", "1", "--d-model", "16",
        "--heads", "2", "--context", "16", "--batch-size", "4", "--warmup-steps", "1",
        "--steps", "4", "--eval-every", "2"]


@pytest.mark.slow
def test_bpe_run_resumes_samples_evaluates_and_fine_tunes(tmp_path, folder, jaxtrain):
    """A BPE run through the CLI: its tokenizer saved in the run, bits per byte in every
    record, any prompt encodable, a file tokenizer and --init-from reusing it."""
    run = tmp_path / "bpe"
    # As a user runs it (a process of its own): it must exit once done, whatever threads
    # the tokenization started.
    proc = cli("fit", "--data-file", folder, "--tokenizer", "bpe", "--vocab-size", 300,
               *TEXT_TINY, "--workdir", run)
    assert "text (bpe tokenizer, " in proc.stderr and "nats/token" in proc.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["test_bits_per_byte"] > 0 for r in records)
    assert "test_bits_per_char" not in records[-1]
    saved = (run / "tokenizer.json").read_text()
    assert HFTokenizer(saved).vocab_size <= 300
    jaxtrain("resume", "--workdir", run, "--steps", 6, check=True)
    metrics = json.loads(jaxtrain("eval", "--workdir", run, "--json").stdout)
    assert metrics["step"] == 6 and metrics["test_bits_per_byte"] > 0
    out = jaxtrain("sample", "--workdir", run, "--prompt", "∮ 🙂 new", "--length", 8,
                   check=True).stdout
    assert out.startswith("∮ 🙂 new")
    # The saved tokenizer as a file for a new run, and a fine-tuned run keeps its source's.
    again = tmp_path / "file"
    proc = jaxtrain("fit", "--data-file", folder, "--tokenizer", run / "tokenizer.json", *TEXT_TINY,
                    "--workdir", again, check=True)
    assert "(tokenizer.json tokenizer" in proc.stderr
    assert (again / "tokenizer.json").read_text() == saved
    tuned = tmp_path / "tuned"
    jaxtrain("fit", "--data-file", folder / "a.txt", "--init-from", run, *TEXT_TINY, "--workdir",
             tuned, check=True)
    assert (tuned / "tokenizer.json").read_text() == saved
    assert_one_line_error(jaxtrain("fit", "--data-file", folder, "--init-from", run,
                                   "--tokenizer", "bpe", "--vocab-size", 400, *TEXT_TINY,
                                   "--workdir", tmp_path / "other"), "keeps its tokenizer")
    jaxtrain("export", "--workdir", run, "--out", tmp_path / "bpe.safetensors", check=True)
    assert export.read(tmp_path / "bpe.safetensors")[1]["tokenizer"] == saved
    rows = json.loads(jaxtrain("runs", tmp_path, "--json").stdout)
    assert len(rows) == 3
    assert {r["unit"] for r in rows} == {"nats/token"}
    assert all(r["best_bits_per_byte"] > 0 for r in rows)


def test_tokenizer_errors_are_one_line(tmp_path, folder, jaxtrain):
    base = ["fit", "--workdir", tmp_path / "run", *TEXT_TINY]
    (tmp_path / "bad.json").write_text("{}")
    assert_one_line_error(jaxtrain(*base, "--data-file", folder, "--tokenizer",
                                   tmp_path / "bad.json"), "does not load")
    assert_one_line_error(jaxtrain(*base, "--data-file", folder, "--tokenizer", "bpe",
                                   "--vocab-size", 100), "--vocab-size must be > 256")
    assert_one_line_error(jaxtrain(*base, "--data-file", folder, "--vocab-size", 300),
                          "goes with --tokenizer bpe")
    assert_one_line_error(jaxtrain("fit", "--tokenizer", "bpe"), "applies to text runs")
    (folder / "sub" / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    assert_one_line_error(jaxtrain(*base, "--data-file", folder), "latin1.txt is not UTF-8")
