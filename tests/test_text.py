import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import fresh_params

from jaxtrain.models.charlm import CharLMFamily
from jaxtrain.models.transformer import TransformerConfig
from jaxtrain.training.sources import text
from jaxtrain.training.sources.corpus import characters
from jaxtrain.training.sources.tokenizer import CharTokenizer

TEXT = "hello world, hello jax.\n" * 40  # 960 characters


def build_vocab(chars: str) -> str:
    return "".join(sorted(set(chars)))


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_vocab_and_round_trip(tmp_path):
    (tmp_path / "b.txt").write_text("banana!")
    vocab = characters(tmp_path / "b.txt")
    assert vocab == "!abn"
    tokens = CharTokenizer(vocab).encode("banana")
    assert tokens.tolist() == [2, 1, 3, 1, 3, 1]
    assert CharTokenizer(vocab).decode(tokens) == "banana"
    with pytest.raises(ValueError, match="'xz'"):
        CharTokenizer(vocab).encode("xaz")


@pytest.mark.parametrize("content, match", [(b"", "is empty"), (b"\xff\xfe", "not UTF-8")])
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        text.TextSource(path, CharTokenizer("ab"), 4, 2, 0)
    with pytest.raises(ValueError, match="does not exist"):
        text.TextSource(tmp_path / "missing.txt", CharTokenizer("ab"), 4, 2, 0)


def test_file_shorter_than_a_window_is_refused(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abc" * 50)
    with pytest.raises(ValueError, match="too short for --context 64"):
        text.TextSource(path, CharTokenizer("abc"), 64, 4, 0)


def test_split_windows_by_seed_and_step(text_file):
    source = text.TextSource(text_file, CharTokenizer(build_vocab(TEXT)), 16, 4, seed=0)
    assert len(source.train) == 864 and len(source.val) == 96  # 90% / 10%
    a = [next(source.train_batches(0))["tokens"] for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    stream = source.train_batches(0)
    first, second = next(stream)["tokens"], next(stream)["tokens"]
    np.testing.assert_array_equal(next(source.train_batches(1))["tokens"], second)  # resume
    assert first.shape == (4, 17) and not np.array_equal(first, second)
    # Training windows stay inside the training part.
    for tokens in first:
        assert CharTokenizer(build_vocab(TEXT)).decode(tokens) in TEXT[:864]


def test_eval_windows_are_fixed_and_masked(text_file):
    source = text.TextSource(text_file, CharTokenizer(build_vocab(TEXT)), 16, 32, seed=0)
    batches = list(source.eval_batches())
    assert source.eval_examples == 80  # min(256, 96 - 16) windows
    assert sum(b["mask"].sum() for b in batches) == 80 and batches[-1]["mask"][16:].sum() == 0
    again = list(source.eval_batches())
    np.testing.assert_array_equal(batches[0]["tokens"], again[0]["tokens"])


def test_eval_windows_sets_how_many_windows_an_evaluation_reads(text_file):
    """--eval-windows N: N evenly spaced windows (nanoGPT's 20 x 12 per split: 480)."""
    source = text.TextSource(text_file, CharTokenizer(build_vocab(TEXT)), 16, 4, seed=0,
                             eval_windows=5)
    assert source.eval_examples == 5 and source.eval_starts[0] == 0
    assert source.eval_starts[-1] == len(source.val) - 17  # the last window ends the text


def tiny_family(vocab="abcd", context=8):
    config = TransformerConfig(layers=1, d_model=16, heads=2, dropout=0.0, context=context,
                               vocab_size=len(vocab), output_size=len(vocab))
    family = CharLMFamily(config, CharTokenizer(vocab))
    # (Jitted, as a run's init is: one program, not a compile per operation.)
    return family, fresh_params(family, 2)


@pytest.mark.slow
def test_uniform_model_costs_log_vocab_per_character():
    family, params = tiny_family()
    params = jax.tree.map(np.zeros_like, params)  # all-zero weights: uniform predictions
    batch = {"tokens": np.zeros((2, 9), np.int32), "mask": np.array([1.0, 0.0], np.float32),
             "bytes": np.array([16.0, 3.0], np.float32)}  # as if each character were 2 bytes
    sums = jax.jit(family.eval_sums)(params, batch, None)  # as a run calls it
    assert float(sums["count"]) == 8  # one real window of 8 predicted characters
    metrics = family.finalize({k: float(sums[k] / sums["count"]) for k in ("loss", "bytes")})
    np.testing.assert_allclose(metrics["loss"], math.log(4), rtol=1e-6)
    np.testing.assert_allclose(metrics["bits_per_char"], 2.0, rtol=1e-6)
    np.testing.assert_allclose(metrics["bits_per_byte"], 1.0, rtol=1e-6)  # 2 bits, 2 bytes


@pytest.mark.slow
def test_top_p_through_the_cached_and_sliding_decoders():
    """A model whose logits are log([0.5, 0.3, 0.15, 0.05]) at every position (zero
    weights, that output bias): top_p 0.8 draws tokens 0 and 1 only, 0.625 : 0.375, in
    the cached scan (8 tokens) and past the context (392); the same options again, with
    another key, compile nothing."""
    from jaxtrain.models.decoding import _decode, _slide

    family, params = tiny_family()
    params = jax.tree.map(np.zeros_like, params)
    params["Dense_0"]["bias"] = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
    out = family.sample(params, np.array([3]), jax.random.PRNGKey(0), 400, top_p=0.8)
    assert set(out.tolist()) == {0, 1} and abs(np.mean(out == 0) - 0.625) < 0.1  # 4 sd
    compiled = _decode._cache_size(), _slide._cache_size()
    family.sample(params, np.array([3]), jax.random.PRNGKey(1), 400, top_p=0.8)
    assert (_decode._cache_size(), _slide._cache_size()) == compiled


@pytest.mark.slow
def test_generation_past_the_context_is_greedy_and_deterministic():
    family, params = tiny_family()
    prompt = np.array([0, 1, 2], np.int32)
    out = family.sample(params, prompt, jax.random.PRNGKey(0), 20, temperature=0.0)
    assert out.shape == (20,) and out.max() < 4
    again = family.sample(params, prompt, jax.random.PRNGKey(5), 20, temperature=0.0)
    np.testing.assert_array_equal(out, again)  # greedy ignores the key
    # Within the context, the cached path gives what a full forward pass would.
    tokens = list(prompt)
    last = jax.jit(lambda params, tokens: family.model.apply({"params": params}, tokens)[0, -1])
    for _ in range(4):
        tokens.append(int(np.argmax(last(params, jnp.array([tokens])))))
    assert out[:4].tolist() == tokens[3:]
    with pytest.raises(ValueError, match="1 to 8"):
        family.sample(params, np.zeros(9, np.int32), jax.random.PRNGKey(0), 1)


def test_a_clocked_sample_times_its_compile_apart_and_draws_the_same():
    """With a Clock the programs are compiled ahead of time, the compile timed apart from
    the generation; the tokens are those of the jitted path, in and past the context."""
    from jaxtrain.models.decoding import Clock
    from jaxtrain.training.commands.restored import speed_line

    family, params = tiny_family()
    prompt, key = np.array([0, 1, 2], np.int32), jax.random.PRNGKey(3)
    clock = Clock()
    clocked = family.sample(params, prompt, key, 12, temperature=0.8, clock=clock)
    np.testing.assert_array_equal(clocked, family.sample(params, prompt, key, 12,
                                                         temperature=0.8))
    assert clock.compile_s > 0 and clock.generate_s > 0
    line = speed_line(12, Clock(compile_s=2.14, generate_s=0.5))
    assert line == "sampled 12 tokens in 0.50 s (24 tokens/s after a 2.1 s compile)"
