"""Text generation: jaxtrain's key/value-cache decoder against PyTorch eager generation of
the same model, rows of `make bench`, or alone:

    python benchmarks/bench.py --only generation [--quick] [--out benchmarks/results]

writes <out>/generation.json and <out>/generation.md. The model: the text Transformer at
`fit`'s text defaults (4 layers of 128, 4 heads, context 256, dropout 0), a 65-character
vocabulary, random weights (the speed does not depend on them), written by `jaxtrain
export`'s code and read by benchmarks/torch_reference.py:load_exported, so both sides
hold the same weights. Each side draws context - 1 greedy tokens for one sequence after
a one-token prompt, all within the context:

- jaxtrain: `CharLMFamily.sample`, the path of `jaxtrain sample` (one jitted lax.scan
  over the positions, reading and writing the key/value cache); its compile is timed
  apart on a first call (decoding.Clock), before the warm-up;
- PyTorch eager with a key/value cache (TorchTransformer.generate: each token one
  position through the blocks, the keys and values grown by torch.cat);
- PyTorch eager as nanoGPT's `generate` (no cache: the sequence so far through the whole
  model for each token), the script most PyTorch users start from.

Each PyTorch side runs with its default threads (one per core, as a user gets them) and
with one thread: one sequence's small matmuls gain nothing from a second thread, and on
a busy machine (other processes on the cores) PyTorch's threads wait on each other, up to
100x slower. They all run in alternating repeats after a warm-up call each; ratios are
jaxtrain's tokens/s over each PyTorch's, pair by pair, then the median.
"""

import json
import statistics
import string
import tempfile
from pathlib import Path

import jax
import numpy as np
import torch
import torch_reference as ref  # benchmarks/, beside this script
from timing import seconds

from jaxtrain.models.charlm import CharLMFamily
from jaxtrain.models.decoding import Clock
from jaxtrain.models.transformer import TransformerConfig
from jaxtrain.training.commands import export
from jaxtrain.training.settings.config import DataConfig, RunConfig, TrainConfig
from jaxtrain.training.sources.tokenizer import CharTokenizer

FULL = TransformerConfig(context=256, vocab_size=65, output_size=65, dropout=0.0)
TINY = TransformerConfig(layers=1, d_model=32, heads=2, context=16, vocab_size=65,
                         output_size=65, dropout=0.0)
# PyTorch's sides: (the cache, threads: None for the default, one per core).
SIDES = {"torch_cache": (True, None), "torch_cache_1": (True, 1),
         "torch_nanogpt": (False, None), "torch_nanogpt_1": (False, 1)}


def _label(key: str, threads: int) -> str:
    cache, one = SIDES[key]
    return ("KV cache" if cache else "nanoGPT's generate (no cache)") + \
        f", {one or threads} thread{'s' if (one or threads) > 1 else ''}"


def twins(config: TransformerConfig):
    """(jaxtrain's family, its parameters, the PyTorch twin holding them): the parameters
    written as `jaxtrain export` writes them, read back by load_exported."""
    from safetensors.numpy import save

    vocab = string.printable[:config.vocab_size]
    family = CharLMFamily(config, CharTokenizer(vocab))
    params = jax.jit(family.init, static_argnums=1)(jax.random.PRNGKey(0), 1)
    run = RunConfig("transformer", config, DataConfig("text", data_file="x.txt", vocab=vocab),
                    TrainConfig(epochs=None, steps=1, warmup_steps=0))
    path = Path(tempfile.mkdtemp()) / "model.safetensors"
    path.write_bytes(save(export.tensors(params), metadata=export.metadata(run, 0)))
    return family, params, ref.load_exported(path)[0]


def _summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def generation(config: TransformerConfig, repeats: int) -> dict:
    """Tokens per second of each side (jax, torch_cache, torch_nanogpt) and the ratios."""
    family, params, model = twins(config)
    length, rng, prompt = config.context - 1, jax.random.PRNGKey(0), np.array([1], np.int32)
    clock = Clock()
    ours = family.sample(params, prompt, rng, length, temperature=0.0, clock=clock)
    start = torch.from_numpy(prompt.astype(np.int64))[None]  # [1, 1]
    theirs = model.generate(start, length)[0].numpy()
    threads = torch.get_num_threads()

    def torch_side(cache, one):
        def run():
            torch.set_num_threads(one or threads)
            try:
                model.generate(start, length, cache)
            finally:
                torch.set_num_threads(threads)
        return run

    sides = {"jax": lambda: family.sample(params, prompt, rng, length, temperature=0.0),
             **{key: torch_side(*side) for key, side in SIDES.items()}}
    for fn in sides.values():
        fn()  # warm-up: jit's own compile, allocators, caches
    rates = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            rates[name].append(length / seconds(fn))
    out = {"layers": config.layers, "d_model": config.d_model, "context": config.context,
           "tokens": length, "compile_s": clock.compile_s,
           "first_call_tokens_per_s": length / clock.generate_s,
           "same_greedy_tokens": int(np.cumprod(ours == theirs).sum()),
           "torch_threads": threads, "jax": _summary(rates["jax"])}
    for name in SIDES:
        out[name] = {"torch": _summary(rates[name]),
                     "ratio": _summary([a / b for a, b in zip(rates["jax"], rates[name])])}
    return out


def cases(r: dict) -> dict:
    """bench.py's rows (its `cases`: jax, torch, ratio, unit) of a generation()."""
    what = (f"text generation, {r['tokens']} greedy tokens ({r['layers']}x{r['d_model']}, "
            f"context {r['context']}), jaxtrain's KV-cache decoder against")
    return {f"{what} PyTorch's {_label(key, r['torch_threads'])}": {
        "jax": r["jax"], **r[key], "unit": "tokens/s"} for key in SIDES}


def markdown(r: dict, machine: dict) -> str:
    """generation.md: the rows, the compile and the greedy tokens' agreement."""
    def fmt(s):
        return f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f}) tokens/s"

    lines = [f"Measured {machine['date']} on {machine['cpu']} ({machine['cores']} cores), jax "
             f"{machine['jax']}, torch {machine['torch']}; "
             f"load average {machine['load_before']} before, {machine['load_after']} after: "
             "`python benchmarks/bench.py --only generation`. Median (min-max) of "
             f"{len(r['jax']['values'])} alternating repeats; ratio = jaxtrain / PyTorch, pair "
             f"by pair. One sequence, {r['tokens']} greedy tokens after a one-token prompt, "
             f"{r['layers']} layers of {r['d_model']}, context {r['context']}, the same "
             "weights on both sides (`jaxtrain export`, `load_exported`).", "",
             "| jaxtrain KV-cache decoder | against | PyTorch eager | ratio |",
             "|---|---|---|---|"]
    for key in SIDES:
        x = r[key]
        lines.append(f"| {fmt(r['jax'])} | {_label(key, r['torch_threads'])} | "
                     f"{fmt(x['torch'])} | "
                     f"{x['ratio']['median']:.2f}x ({x['ratio']['min']:.2f}-"
                     f"{x['ratio']['max']:.2f}) |")
    lines += ["", f"jaxtrain's compile, timed apart (ahead of time, as `jaxtrain sample` "
              f"does): {r['compile_s']:.1f} s; that first call then generated at "
              f"{r['first_call_tokens_per_s']:,.0f} tokens/s. Greedy tokens the two agree on "
              f"from the start: {r['same_greedy_tokens']} of {r['tokens']} (float32 rounding "
              "between XLA and PyTorch can flip a near-tie of random weights' logits)."]
    return "\n".join(lines) + "\n"


def write(results: dict, machine: dict, out: Path) -> str:
    """<out>/generation.json and <out>/generation.md; returns the page."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "generation.json").write_text(json.dumps({"machine": machine, **results},
                                                    indent=1) + "\n")
    page = markdown(results, machine)
    (out / "generation.md").write_text(page)
    return page
