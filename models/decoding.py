"""Drawing tokens from a Transformer: the next-token rule, and the key/value-cached
decoding loops of the digits and text tasks.

Shapes: N sequences, K output vocabulary, T context.
"""

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np


def pick(logits, rng, temperature, top_k, top_p=None):
    """The next token from logits [N, K]: greedy at temperature 0, else sampled from
    softmax(filtered_logits(...))."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1)
    return jax.random.categorical(rng, filtered_logits(logits, temperature, top_k, top_p))


def filtered_logits(logits, temperature, top_k=None, top_p=None):
    """Logits [N, K] divided by `temperature` (> 0), then -inf outside the top_k
    likeliest tokens (all when None), then outside the nucleus: the likeliest tokens
    whose probability sums to >= top_p (all when None or 1), as Hugging Face's and
    litgpt's samplers order them. The likeliest token is always kept; a token tied with
    the last one kept is kept too, so the result does not depend on the tokens' order."""
    assert temperature > 0, temperature
    logits = logits / temperature
    if top_k is not None:
        if top_k > logits.shape[-1]:  # shapes are static, so this holds under jit too
            raise ValueError(f"--top-k {top_k} exceeds the {logits.shape[-1]} possible tokens")
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [N, 1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None and top_p < 1:
        ranked = jnp.sort(logits, axis=-1)[:, ::-1]  # [N, K], likeliest first
        probs = jax.nn.softmax(ranked.astype(jnp.float32), axis=-1)
        # The mass of the tokens likelier than each: a token is in the nucleus while the
        # ones before it fall short of top_p (the first, with 0 before it, always is).
        before = jnp.pad(jnp.cumsum(probs, axis=-1)[:, :-1], ((0, 0), (1, 0)))  # [N, K]
        last = jnp.min(jnp.where(before < top_p, ranked, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < last, -jnp.inf, logits)  # [N, K]
    return logits


def decode_fixed_length(decoder, params, first, length, rng, temperature, top_k,
                        top_p=None):
    """`length` tokens [N, length] after the tokens `first` [N], all N sequences at once,
    in one jitted `lax.scan` over positions with the decoder's key/value cache."""
    cache = empty_cache(decoder, first.shape[0])
    return _decode(decoder, params, cache, first, rng, length, float(temperature), top_k,
                   _static(top_p))


def empty_cache(decoder, n: int):
    """The decoder's key/value cache for `n` sequences before the first token: zeros,
    as Flax's attention and the position counter start. Made from shapes alone:
    decoder.init would also draw fresh parameters, its initialisers each compiled on
    their own (seconds, at each run's first evaluation)."""
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), _cache_shapes(decoder, n))


@functools.cache
def _cache_shapes(decoder, n: int):
    return jax.eval_shape(decoder.init, jax.random.PRNGKey(0),
                          jnp.zeros((n, decoder.config.context), jnp.int32))["cache"]


def _static(top_p):
    """top_p as a static argument: a float, so 1 and 1.0 share one compiled program."""
    return None if top_p is None else float(top_p)


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7, 8))
def _decode(decoder, params, cache, first, rng, length, temperature, top_k, top_p):
    def step(carry, i):
        cache, token = carry
        logits, variables = decoder.apply({"params": params, "cache": cache}, token[:, None],
                                          mutable=["cache"])
        next_token = pick(logits[:, 0], jax.random.fold_in(rng, i), temperature, top_k,
                          top_p)
        return (variables["cache"], next_token), next_token

    _, tokens = jax.lax.scan(step, (cache, first), jnp.arange(length))
    return tokens.T  # [N, length]


@dataclasses.dataclass
class Clock:
    """Where a decoding's seconds went: making its programs ready (the cache's shapes,
    tracing, lowering and XLA's compile, or a load from the persistent cache) and
    generating (running them, prompt included)."""
    compile_s: float = 0.0
    generate_s: float = 0.0


def _program(clock: Clock | None, fn, *args, static=()):
    """The jitted `fn` for `args`, as a callable of the arguments not in `static` (their
    positions). With a clock it is compiled ahead of time, the compile timed apart: jit
    would hide it in the first call, and a tokens/s would count it."""
    if clock is None:
        def call(*dynamic):
            given = iter(dynamic)
            return fn(*(a if i in static else next(given) for i, a in enumerate(args)))
        return call
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    clock.compile_s += time.perf_counter() - t0
    return compiled


STATIC = (0, 5, 6, 7, 8)  # _decode's and _slide's static arguments


def continue_text(model, decoder, params, prompt: np.ndarray, length: int, rng,
                  temperature=1.0, top_k=None, top_p=None,
                  clock: Clock | None = None) -> np.ndarray:
    """`length` tokens following `prompt` [P] (1 <= P <= context), token i drawn with
    fold_in(rng, i). Within the context the key/value cache makes each token cost one
    position (one lax.scan, _decode); past it, the last `context` tokens are run through
    the model again for each new token (the positions are learned, so a window cannot
    slide inside the cache): a second scan. Two dispatches for the whole text. A
    `clock` gets the seconds of compiling and of generating, apart."""
    context = decoder.config.context
    if not 1 <= len(prompt) <= context:
        raise ValueError(f"the prompt is {len(prompt)} tokens long; it needs 1 to "
                         f"{context} (the model's context)")
    start, before = time.perf_counter(), clock and clock.compile_s
    temperature, top_p = float(temperature), _static(top_p)
    cache = empty_cache(decoder, 1)
    if clock is not None:  # the cache's shapes trace the model once (a program's set-up)
        clock.compile_s += time.perf_counter() - start
    if len(prompt) > 1:
        step = _program(clock, _cached_step(decoder), params, cache,
                        jnp.zeros((1, 1), jnp.int32))
        for token in prompt[:-1]:
            cache = step(params, cache, jnp.array([[token]], jnp.int32))
    # Token i reads the cache while the token before it has a position (P - 1 + i <
    # context); the first past that sees exactly `context` tokens either way.
    inside = min(length, context - len(prompt) + 1)
    first = jnp.asarray(prompt[-1:], jnp.int32)
    decode = _program(clock, _decode, decoder, params, cache, first, rng, inside, temperature,
                      top_k, top_p, static=STATIC)
    tokens = np.concatenate([prompt, np.asarray(decode(params, cache, first, rng))[0]])
    if length > inside:
        window = jnp.asarray(tokens[-context:], jnp.int32)[None]
        slide = _program(clock, _slide, model, params, window, rng, inside, length - inside,
                         temperature, top_k, top_p, static=STATIC)
        tokens = np.concatenate([tokens, np.asarray(slide(params, window, rng, inside))])
    if clock is not None:
        clock.generate_s += time.perf_counter() - start - (clock.compile_s - before)
    return tokens[len(prompt):].astype(np.int32)


@functools.cache
def _cached_step(decoder):
    """One prompt token into the cache."""

    @jax.jit
    def step(params, cache, token):
        _, variables = decoder.apply({"params": params, "cache": cache}, token,
                                     mutable=["cache"])
        return variables["cache"]

    return step


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7, 8))
def _slide(model, params, window, rng, first, length, temperature, top_k, top_p):
    """`length` tokens after `window` [1, T], each drawn from the model run on the T
    tokens before it; token i with fold_in(rng, first + i)."""

    def step(window, i):
        logits = model.apply({"params": params}, window)[:, -1]
        token = pick(logits, jax.random.fold_in(rng, i), temperature, top_k, top_p)
        return jnp.concatenate([window[:, 1:], token[:, None].astype(window.dtype)], axis=1), \
            token[0]

    _, tokens = jax.lax.scan(step, window, first + jnp.arange(length))
    return tokens
