"""jaxtrain against PyTorch eager on this machine, side by side: `make bench`.

    python benchmarks/bench.py [--out benchmarks/results] [--quick --data-dir DIR]

Each case times jaxtrain's own code and a PyTorch reference of the same model (same
shapes, losses and optimizer: benchmarks/torch_reference.py) in one process, in
alternating A/B repeats, after a warm-up (compilation). Ratios are taken pair by pair
(jaxtrain rate / PyTorch rate within the same repeat), then the median. The load
average before each case is recorded: other work on the machine slows both sides.
Writes <out>/bench.json and <out>/bench.md. --quick shrinks every case (for the tests).
`--only generation` runs the text-generation rows alone (benchmarks/text_generation.py,
about a minute) and writes <out>/generation.json and generation.md, as the whole run does.
`--only baby-gpt` runs nanoGPT's baby GPT at equal work (the step side by side, where
its time goes, the whole commands; about 15 minutes) into <out>/baby_gpt.json and .md.
"""

import argparse
import dataclasses
import datetime
import functools
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import step_profile  # benchmarks/step_profile.py
import text_generation  # benchmarks/text_generation.py
import torch
import torch_char_script  # benchmarks/torch_char_script.py
import torch_reference as ref  # benchmarks/torch_reference.py, beside this script
from timing import seconds  # benchmarks/timing.py

from jaxtrain.models.charlm import CharLMFamily
from jaxtrain.models.decoding import pick
from jaxtrain.models.pixel_lm import PixelLMFamily, num_patches
from jaxtrain.models.transformer import PATCH_SYMBOLS, TransformerConfig, matmul_weights
from jaxtrain.models.vae import VAEConfig, VAEFamily
from jaxtrain.training.commands.fit import train
from jaxtrain.training.engine.optimizer import make_optimizer, make_schedule
from jaxtrain.training.engine.run import Run
from jaxtrain.training.engine.startup import describe_start
from jaxtrain.training.engine.steps import create_state, make_train_step
from jaxtrain.training.host.workarounds import tune_host
from jaxtrain.training.rundir import checkpoint
from jaxtrain.training.settings.config import DataConfig, RunConfig, TrainConfig
from jaxtrain.training.sources import images as data
from jaxtrain.training.sources.mnist import SHAPE, raw_dir
from jaxtrain.training.sources.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parent.parent
VAE = VAEConfig(image_shape=SHAPE)  # the default VAE on MNIST's 28 x 28 x 1


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def side_by_side(jax_fn, torch_fn, work, repeats):
    """Alternating timed calls; `work` units (samples, tokens) per call -> rates per second
    of each side and the pairwise ratios."""
    jax_fn(), torch_fn()  # warm-up: compilation, allocator, caches
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(work / seconds(jax_fn))
        theirs.append(work / seconds(torch_fn))
    return {"jax": summary(ours), "torch": summary(theirs),
            "ratio": summary([a / b for a, b in zip(ours, theirs)])}


def loadavg():
    return round(os.getloadavg()[0], 2)


# --- Cases. ---


def matmul_peak(n, repeats):
    """fp32 GFLOP/s of an n x n matmul, jnp.dot and torch.mm; the larger is the peak."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    dot = jax.jit(jnp.dot)
    t = torch.from_numpy(np.array(a))
    out = side_by_side(lambda: dot(a, a).block_until_ready(), lambda: torch.mm(t, t),
                       2 * n**3 / 1e9, repeats)
    out["peak_gflops"] = max(out["jax"]["max"], out["torch"]["max"])
    return out


PER_CALL = 10  # steps per call in the --steps-per-call case


def fresh_step(family, batch_size, per_call=1, abstract=False):
    """(jaxtrain's state at step 0, or its shapes with `abstract`; the jitted train step
    of `per_call` steps a call) for `family`, as `jaxtrain fit` builds them."""
    train_config = TrainConfig(batch_size=batch_size, warmup_steps=10)
    schedule = make_schedule(train_config, 100_000)
    tx = make_optimizer(train_config, schedule, no_decay=family.no_decay)
    make = functools.partial(create_state, family, train_config, tx)
    state = jax.eval_shape(make) if abstract else jax.jit(make)()  # one program, as fit's
    return state, make_train_step(family, schedule, train_config.ema_decay,
                                  steps_per_call=per_call)


def step_flops(family, batch, batch_size) -> float:
    """Training FLOPs of one example: XLA's cost analysis of one compiled step, as
    `jaxtrain fit` counts them for its record's gflops (training/engine/precompile.py)."""
    state, step = fresh_step(family, batch_size, abstract=True)
    lowered = step.lower(state, batch)
    # On a GPU the lowered program of a Transformer step has no cost analysis (None);
    # the compiled one has.
    costs = lowered.cost_analysis() or lowered.compile().cost_analysis()
    return costs["flops"] / batch_size


def jax_steps(family, batch, steps, batch_size, per_call=1):
    """A closure running `steps` of jaxtrain's jitted train step on one fixed batch, in
    calls of `per_call` steps (--steps-per-call) each."""
    state, step = fresh_step(family, batch_size, per_call)
    if per_call > 1:
        batch = jax.tree.map(lambda x: np.stack([x] * per_call), batch)
    batch = jax.device_put(batch)

    def run():
        nonlocal state
        for _ in range(steps // per_call):
            state, _ = step(state, batch)
        jax.block_until_ready(state)

    return run


def torch_steps(step, batch, steps):
    def run():
        for _ in range(steps):
            step(*batch)

    return run


def torch_vae(vae: VAEConfig):
    """ref.TorchVAE of `vae`'s sizes."""
    return ref.TorchVAE(vae.encoder_widths, vae.decoder_widths, vae.latent_dim)


def vae_step(batch_size, steps, repeats, peak, per_call=1, vae=VAE):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, *SHAPE), dtype=np.uint8)
    labels = rng.integers(0, 10, batch_size)
    batch = {"image": images, "label": labels.astype(np.int32)}
    ours = jax_steps(VAEFamily(vae), batch, steps, batch_size, per_call)
    theirs = torch_steps(ref.make_step(torch_vae(vae), ref.vae_loss, lr=2e-3),
                         (torch.from_numpy(images.reshape(batch_size, -1) / np.float32(255)),
                          torch.from_numpy(labels)),
                         steps)
    out = side_by_side(ours, theirs, batch_size * steps, repeats)
    out["unit"] = "samples/s"
    flops = step_flops(VAEFamily(vae), batch, batch_size)
    out["gflops"] = out["jax"]["median"] * flops / 1e9
    out["peak_share"] = out["gflops"] / peak
    return out


def transformer_step(name, config, batch_size, steps, repeats, peak):
    rng = np.random.default_rng(0)
    if name == "digits":
        family = PixelLMFamily(config)
        images = rng.integers(0, 256, (batch_size, *config.image_shape), dtype=np.uint8)
        labels = rng.integers(0, 10, batch_size)
        ours_batch = {"image": images, "label": labels.astype(np.int32)}
        # PyTorch gets the same token sequences (class token, then the patches but the last).
        tokens = torch.from_numpy(rng.integers(0, PATCH_SYMBOLS, (batch_size, config.context)))
        inputs = torch.cat([PATCH_SYMBOLS + torch.from_numpy(labels)[:, None],
                            tokens[:, :-1]], 1)
        vocab, out_size, batch = config.vocab_size, config.output_size, (inputs, tokens)
    else:
        vocab_chars = "".join(map(chr, range(config.vocab_size)))  # any distinct characters
        family = CharLMFamily(config, CharTokenizer(vocab_chars))
        tokens = rng.integers(0, config.vocab_size, (batch_size, config.context + 1))
        ours_batch = {"tokens": tokens.astype(np.int32)}
        tokens = torch.from_numpy(tokens)
        vocab, out_size, batch = config.vocab_size, config.output_size, (tokens[:, :-1],
                                                                         tokens[:, 1:])
    ours = jax_steps(family, ours_batch, steps, batch_size)
    model = ref.TorchTransformer(vocab, out_size, config.context, config.layers, config.d_model,
                                 config.heads, config.dropout)
    theirs = torch_steps(ref.make_step(model, ref.lm_loss), batch, steps)
    out = side_by_side(ours, theirs, batch_size * config.context * steps, repeats)
    out["unit"] = "tokens/s"
    flops = step_flops(family, ours_batch, batch_size) / config.context  # per token
    out["gflops"] = out["jax"]["median"] * flops / 1e9
    out["peak_share"] = out["gflops"] / peak
    return out


def sample_without_cache(model, params, labels, rng):
    """Each new token runs the whole (padded) sequence through the model: no cache."""
    forward = jax.jit(lambda tokens: model.apply({"params": params}, tokens))
    context = model.config.context
    tokens = jnp.zeros((len(labels), context), jnp.int32).at[:, 0].set(PATCH_SYMBOLS + labels)
    out = []
    for i in range(context):
        token = pick(forward(tokens)[:, i], jax.random.fold_in(rng, i), 1.0, None)
        out.append(token)
        if i + 1 < context:
            tokens = tokens.at[:, i + 1].set(token)
    return jax.block_until_ready(jnp.stack(out, 1))


def kv_cache_sampling(config, n, repeats):
    """Seconds to sample n digits token by token, with and without the key/value cache."""
    family = PixelLMFamily(config)
    params = jax.jit(family.init, static_argnums=1)(jax.random.PRNGKey(0), 1)
    labels, key = np.arange(n) % 10, jax.random.PRNGKey(0)
    cached = lambda: family.sample(params, labels, key)  # noqa: E731
    uncached = lambda: sample_without_cache(family.model, params, jnp.asarray(labels), key)  # noqa: E731
    cached(), uncached()  # compile
    with_cache = [seconds(cached) for _ in range(repeats)]
    without = [seconds(uncached) for _ in range(max(1, repeats // 2))]
    return {"with_cache_s": summary(with_cache), "without_cache_s": summary(without),
            "speedup": statistics.median(without) / statistics.median(with_cache)}


class ClassicTorchEpoch:
    """The classic PyTorch VAE script's epoch (pytorch/examples vae/main.py): a torchvision
    dataset with ToTensor per image through a shuffling DataLoader, a train pass, a test
    pass, then torch.save of model and optimizer. The model is jaxtrain's (TorchVAE), on
    `device` (the script's `.to(device)` idiom for a GPU), of `vae`'s sizes."""

    def __init__(self, dataset, data_dir, batch_size, device="cpu", vae=VAE):
        from torchvision import datasets, transforms

        cls = datasets.FashionMNIST if dataset == "fashion-mnist" else datasets.MNIST
        root = raw_dir(dataset, data_dir).parent.parent
        to_tensor = transforms.ToTensor()
        self.train = torch.utils.data.DataLoader(
            cls(root, train=True, transform=to_tensor), batch_size=batch_size, shuffle=True)
        self.test = torch.utils.data.DataLoader(
            cls(root, train=False, transform=to_tensor), batch_size=batch_size)
        self.device = device
        self.model = torch_vae(vae).to(device)
        self.step = ref.make_step(self.model, ref.vae_loss, lr=2e-3)
        self.path = Path(tempfile.mkdtemp()) / "vae.pt"

    def __call__(self):
        self.model.train()
        for images, labels in self.train:
            self.step(images.flatten(1).to(self.device), labels.to(self.device))
        self.model.eval()
        with torch.no_grad():
            for images, labels in self.test:
                ref.vae_loss(self.model, images.flatten(1).to(self.device),
                             labels.to(self.device))
        torch.save({"model": self.model.state_dict()}, self.path)


def whole_epoch(dataset, data_dir, batch_size, repeats, device="cpu", vae=VAE):
    """One epoch of `jaxtrain fit` (data, steps, eval, images, checkpoint) against the
    classic PyTorch script's epoch, alternating, after one warm-up epoch each."""
    data_config = DataConfig(dataset, str(data_dir), download=False)
    source = data.ImageSource(data_config, batch_size, seed=0)
    spe = source.steps_per_epoch
    config = RunConfig("vae", vae, data_config,
                       TrainConfig(epochs=repeats + 1, batch_size=batch_size,
                                   warmup_steps=min(200, spe)))
    run = Run(config, spe)
    workdir = Path(tempfile.mkdtemp())
    state, epoch = run.init_state(), itertools.count()

    def ours():
        nonlocal state
        torch.set_num_threads(1)  # as jaxtrain's data module sets it
        e = next(epoch)
        state = train(run, workdir, state, source, e * spe, (e + 1) * spe)

    classic = ClassicTorchEpoch(dataset, data_dir, batch_size, device, vae)

    def theirs():
        torch.set_num_threads(os.cpu_count())  # PyTorch's default
        classic()

    out = side_by_side(ours, theirs, spe * batch_size, repeats)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    after_warmup = records[1:]
    out["epoch_s"] = {side: spe * batch_size / out[side]["median"] for side in ("jax", "torch")}
    out["data_share_of_steps"] = statistics.median(r["data_s"] / r["train_s"]
                                                   for r in after_warmup)
    out["save_block_s"] = statistics.median(r["save_s"] for r in after_warmup)
    # The whole save (blocking part and background write) against the epoch.
    manager = checkpoint.open_manager(Path(tempfile.mkdtemp()), keep=repeats + 1)
    saves = []
    for i in range(repeats):
        def save():
            checkpoint.save(manager, state.replace(step=state.step + 1 + i), {"step": 0},
                            config)
            manager.wait_until_finished()
        saves.append(seconds(save))
    manager.close()
    out["save_s"] = summary(saves)
    out["save_share_of_epoch"] = statistics.median(saves) / out["epoch_s"]["jax"]
    out["workdir"] = str(workdir)
    return out


def command_seconds(args, repeats):
    command = [sys.executable, "-m", "jaxtrain.cli.main", *args]
    return summary([seconds(lambda: subprocess.run(command, check=True, capture_output=True))
                    for _ in range(repeats)])


def vim_manual() -> Path | None:
    """The Vim user manual as one text file (a Debian machine's offline text), or None."""
    parts = sorted(Path("/usr/share/vim").glob("vim*/doc/usr_*.txt"))
    if not parts:
        return None
    path = Path(tempfile.mkdtemp()) / "vim-manual.txt"
    path.write_text("".join(p.read_text(encoding="utf-8", errors="replace") for p in parts),
                    encoding="utf-8")
    return path


# Runs argv[2:] and writes its peak RSS (kB) to argv[1]. A small process between: a child
# forked from this big one would count this one's resident pages as its own peak.
_PEAK_LAUNCHER = ("import os, subprocess, sys; c = subprocess.Popen(sys.argv[2:]); "
                  "_, s, u = os.wait4(c.pid, 0); open(sys.argv[1], 'w').write(str(u.ru_maxrss)); "
                  "sys.exit(os.waitstatus_to_exitcode(s))")


def peak_rss_command(command, env=None) -> tuple[float, float]:
    """(seconds, peak resident MB) of a command run to its end, its output discarded: the
    child's own peak (os.wait4), what `/usr/bin/time -v` calls maximum resident set size."""
    with tempfile.NamedTemporaryFile("r") as peak:
        took = seconds(lambda: subprocess.run(
            [sys.executable, "-c", _PEAK_LAUNCHER, peak.name, *command], check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env))
        return took, int(peak.read()) / 1024  # Linux: kilobytes


def jaxtrain_command(args, cache: Path) -> tuple[float, dict]:
    """`jaxtrain fit ARGS` as a whole command with its compilation cache in `cache`:
    (seconds, its first and last records (where the start is: training/engine/startup.py;
    the final validation), its peak RSS in MB and the seconds its records give to
    evaluating, drawing the text or image previews and saving, summed over the run)."""
    workdir = Path(tempfile.mkdtemp())
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "jaxtrain.cli.main", "fit", *map(str, args),
               "--workdir", str(workdir)]
    took, peak_mb = peak_rss_command(command, env)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    spent = {key: sum(r.get(key, 0.0) for r in records)
             for key in ("train_s", "eval_s", "samples_s", "save_s", "writers_s")}
    return took, {"first": records[0], "last": records[-1], "peak_rss_mb": peak_mb,
                  "spent_s": spent}


def whole_command(jax_args, torch_command, warm_repeats):
    """One case of the whole-command section: `jaxtrain fit` with an empty compilation
    cache (cold), then `warm_repeats` times with the cache the first run filled (warm),
    each warm run followed by the PyTorch script a user would run instead (when there is
    one). Seconds from the shell: interpreter, imports, data, compiles, steps,
    evaluations, saves, exit."""
    cache = Path(tempfile.mkdtemp())
    cold, cold_records = jaxtrain_command(jax_args, cache)
    warm, theirs, printed = [], [], None
    for _ in range(warm_repeats):
        took, warm_records = jaxtrain_command(jax_args, cache)
        warm.append(took)
        if torch_command:
            t0 = time.perf_counter()
            printed = subprocess.run(torch_command, check=True, capture_output=True, text=True)
            theirs.append(time.perf_counter() - t0)
    out = {"cold_s": cold, "warm_s": summary(warm),
           "start": {"cold": describe_start(cold_records["first"]),
                     "warm": describe_start(warm_records["first"])},
           "first_step_s": {"cold": cold_records["first"].get("first_step_s"),
                            "warm": warm_records["first"].get("first_step_s")},
           "test_loss": warm_records["last"]["test_loss"],
           "peak_rss_mb": {"cold": cold_records["peak_rss_mb"],
                           "warm": warm_records["peak_rss_mb"]},
           "spent_s": warm_records["spent_s"]}
    if theirs:
        torch_s = statistics.median(theirs)
        out.update(torch_s=summary(theirs), ratio_cold=torch_s / cold,
                   ratio_warm=torch_s / out["warm_s"]["median"],
                   torch_last_line=printed.stdout.strip().splitlines()[-1])
    return out


def baby_gpt_commands(text: Path, steps: int = 2000):
    """(jaxtrain fit's arguments, the PyTorch script's command) of nanoGPT's baby GPT on
    the CPU, equal in work (benchmarks/torch_char_script.py says what nanoGPT's loop
    does): 2000 steps of batch 12 at context 64, 4 x 128, dropout 0; every 250 steps an
    evaluation of 480 windows (nanoGPT: 20 batches of 12 from the training text and 20
    from the validation text; jaxtrain: 480 validation windows, --eval-windows) and a
    checkpoint; the loss read to the host at every step (nanoGPT's log_interval 1,
    jaxtrain's --log-every 1). jaxtrain also writes TensorBoard (its default), with a
    64-character text preview at each evaluation; nanoGPT also evaluates at step 0."""
    windows = 2 * torch_char_script.EVAL_ITERS * torch_char_script.BATCH
    ours = ["--model", "transformer", "--dataset", "text", "--data-file", text,
            "--context", torch_char_script.CONTEXT, "--batch-size", torch_char_script.BATCH,
            "--steps", steps, "--dropout", 0, "--eval-every", torch_char_script.EVAL_INTERVAL,
            "--eval-windows", windows, "--log-every", torch_char_script.LOG_INTERVAL]
    theirs = [sys.executable, str(ROOT / "benchmarks" / "torch_char_script.py"),
              "--data-file", str(text), "--steps", str(steps)]
    return ours, theirs


def whole_commands(dataset, data_dir, repeats, quick=False):
    """The whole-command section: a 20-step VAE fit (defaults, TensorBoard on); 3 VAE
    epochs against the classic PyTorch script (benchmarks/torch_vae_script.py); nanoGPT's
    baby GPT for 2000 steps on the Vim manual against nanoGPT's loop in PyTorch eager,
    equal in work (baby_gpt_commands)."""
    images = ["--dataset", dataset, "--data-dir", str(data_dir), "--no-download"]
    if quick:  # the code path on the tests' tiny data
        tiny = [*images, "--steps", 4, "--batch-size", 8, "--encoder-widths", 32,
                "--decoder-widths", 32, "--warmup-steps", 2]
        return {"cases": {"VAE fit, 4 tiny steps": whole_command(tiny, None, 1)}}
    out = {"VAE fit, 20 steps": whole_command([*images, "--steps", 20], None, repeats)}
    bench = ROOT / "benchmarks"
    out["VAE fit, 3 epochs"] = whole_command(
        [*images, "--epochs", 3], [sys.executable, str(bench / "torch_vae_script.py"),
                                   "--dataset", dataset, "--data-dir", str(data_dir),
                                   "--epochs", "3"], 1)
    text = vim_manual()
    if text:
        out["baby GPT, 2000 steps, nanoGPT's work"] = whole_command(
            *baby_gpt_commands(text), 1)
    return {"cases": out}


def baby_gpt(repeats, peak, quick=False):
    """nanoGPT's baby GPT on the CPU (batch 12, context 64, 4 x 128, dropout 0) on the Vim
    manual: the train step against PyTorch eager's in one process; where the step's time
    goes (benchmarks/step_profile.py); the whole commands at equal work
    (baby_gpt_commands), jaxtrain cold then warm, each warm run followed by the PyTorch
    script."""
    text = vim_manual()
    if text is None:
        raise SystemExit("the baby GPT rows need the Vim manual (Debian's vim-runtime)")
    vocab = len(set(text.read_text(encoding="utf-8")))
    config = TransformerConfig(context=torch_char_script.CONTEXT, vocab_size=vocab,
                               output_size=vocab, dropout=0.0, layers=torch_char_script.LAYERS,
                               d_model=torch_char_script.D_MODEL, heads=torch_char_script.HEADS)
    batch_size = torch_char_script.BATCH
    steady = transformer_step("text", config, batch_size, 50, repeats, peak)
    family = CharLMFamily(config, CharTokenizer("".join(map(chr, range(vocab)))))
    state, step = fresh_step(family, batch_size)
    tokens = np.random.default_rng(0).integers(0, vocab, (batch_size, config.context + 1))
    parts = step_profile.profile(step, state, {"tokens": jnp.asarray(tokens, jnp.int32)})
    whole = whole_command(*baby_gpt_commands(text), repeats)
    tokens_per_step = batch_size * config.context
    gflop = 6 * matmul_weights(config) * tokens_per_step / 1e9
    floor = {"tokens": tokens_per_step, "gflop": gflop, "matmul_ms": 1e3 * gflop / peak,
             "torch_ms": 1e3 * tokens_per_step / steady["torch"]["median"],
             "jax_ms": 1e3 * tokens_per_step / steady["jax"]["median"]}
    return {"vocab": vocab, "steady": steady, "profile_ms": parts, "whole": whole,
            "floor": floor}


def baby_gpt_markdown(results):
    m, b = results["machine"], results
    s, w = b["steady"], b["whole"]
    spent = w["spent_s"]
    torch_line = w["torch_last_line"]
    idle = b["profile_ms"].get(step_profile.IDLE, 0.0)
    ops_total = sum(b["profile_ms"].values()) - idle
    share_of = ops_total + idle
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, {m['isa']}), jax {m['jax']}, "
        f"torch {m['torch']}; load average {m['load_before']} before, {m['load_after']} after. "
        f"Matmul peak (fp32, {m['matmul_n']}x{m['matmul_n']}): "
        f"{results['matmul_peak']['peak_gflops']:.0f} GFLOP/s. Written by "
        "`python benchmarks/bench.py --only baby-gpt`.", "",
        "nanoGPT's baby GPT on a CPU (batch 12, context 64, 4 layers of width 128, 4 heads, "
        f"dropout 0) on the Vim manual ({b['vocab']} characters).", "",
        "**What each side does.** PyTorch: `benchmarks/torch_char_script.py`, nanoGPT's "
        "`train.py` loop as its README runs it on a CPU (`--eval_iters=20 --log_interval=1`, "
        "the config's `eval_interval` 250) around the same model, loss, AdamW, clipping and "
        "schedule as jaxtrain: 2000 steps; at steps 0, 250, ..., 2000 the loss of 20 random "
        "batches of the training text and 20 of the validation text (480 windows), then "
        "torch.save of the model and optimizer when the validation loss improved; the loss "
        "read to the host and printed at every step; PyTorch's default threads (one per "
        "core), eager. jaxtrain: `jaxtrain fit --model transformer --dataset text "
        "--context 64 --batch-size 12 --steps 2000 --dropout 0 --eval-every 250 "
        "--eval-windows 480 --log-every 1`: at steps 250, ..., 2000 the loss of 480 fixed "
        "validation windows, an asynchronous Orbax checkpoint and a 64-character text "
        "preview for TensorBoard (on by default); the training metrics read to the host at "
        "every step. So the PyTorch side evaluates once more (step 0) and jaxtrain draws "
        "the previews: each side's own accounts follow the table.", "",
        "| measure | jaxtrain | PyTorch eager | ratio |", "|---|---|---|---|",
        f"| train step, in one process (tokens/s) | {fmt(s['jax'])} | {fmt(s['torch'])} | "
        f"{s['ratio']['median']:.2f}x ({s['ratio']['min']:.2f}-{s['ratio']['max']:.2f}) |",
        f"| whole command, warm compilation cache (s) | {fmt(w['warm_s'], 1)} | "
        f"{fmt(w['torch_s'], 1)} | {w['ratio_warm']:.2f}x |",
        f"| whole command, cold compilation cache (s) | {w['cold_s']:.1f} | "
        f"{w['torch_s']['median']:.1f} | {w['ratio_cold']:.2f}x |",
        f"| final validation (nats/char) | {w['test_loss']:.4f} | "
        f"{torch_line.rsplit(' ', 1)[-1]} (its best of 40 random batches) | |",
        f"| peak RSS, cold / warm (MB) | {w['peak_rss_mb']['cold']:,.0f} / "
        f"{w['peak_rss_mb']['warm']:,.0f} | | |", "",
        f"jaxtrain's warm run, from its records: steps {spent['train_s']:.1f} s, "
        f"evaluations {spent['eval_s']:.1f} s, text previews {spent['samples_s']:.1f} s, "
        f"checkpoints {spent['save_s']:.1f} s, writers {spent['writers_s']:.1f} s; its start: "
        f"`{w['start']['warm']}` (cold: `{w['start']['cold']}`). The PyTorch script's last "
        f"line: `{torch_line}`.", "",
        f"Where jaxtrain's step goes (benchmarks/step_profile.py, a jax.profiler trace of 20 "
        f"steps: {ops_total:.1f} ms a step in XLA's operations, each fusion counted under "
        f"its root operation, and {idle:.1f} ms in which none ran; shares of their sum):", "",
        "| part | ms per step | share |", "|---|---|---|"]
    lines += [f"| {part} | {ms:.2f} | {100 * ms / share_of:.0f}% |"
              for part, ms in b["profile_ms"].items()]
    if "floor" in b:
        f = b["floor"]
        lines += ["", f"The floor the matmuls set: a step's weight matmuls are {f['gflop']:.2f} "
                  f"GFLOP (6 per weight per token, {f['tokens']} tokens); at the matmul peak "
                  f"above they take {f['matmul_ms']:.1f} ms. PyTorch's step took "
                  f"{f['torch_ms']:.1f} ms (median above), so a step 1.3x as fast "
                  f"({f['torch_ms'] / 1.3:.1f} ms) leaves "
                  f"{f['torch_ms'] / 1.3 - f['matmul_ms']:.1f} ms for everything else "
                  "(attention, LayerNorms, GELU, embeddings, loss, optimizer, EMA, time "
                  "between operations), which now takes "
                  f"{f['jax_ms'] - f['matmul_ms']:.1f} ms of jaxtrain's {f['jax_ms']:.1f}."]
    return "\n".join(lines) + "\n"


# --- Report. ---


def fmt(s, digits=0):
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"


def markdown(results):
    m = results["machine"]
    peak = results["matmul_peak"]["peak_gflops"]
    lines = [f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores), jax {m['jax']}, "
             f"torch {m['torch']}; load average {m['load_before']} before, "
             f"{m['load_after']} after. Median (min-max) of {m['repeats']} alternating "
             f"repeats ({m.get('repeats_long', m['repeats'])} for the Transformers, the whole "
             "epoch and the first step); ratio = jaxtrain / PyTorch eager, pair by pair. "
             f"Matmul peak (fp32, {m['matmul_n']}x{m['matmul_n']}): {peak:.0f} GFLOP/s. "
             + ("malloc keeps freed memory (training/host/workarounds.py) for both sides of the "
                "in-process cases; the PyTorch scripts run with glibc's defaults."
                if m.get("malloc_keeps_freed") else "glibc's malloc defaults."), "",
             "| case | jaxtrain | PyTorch eager | ratio | jaxtrain GFLOP/s (% of peak) |",
             "|---|---|---|---|---|"]
    for name, r in results["cases"].items():
        unit = r["unit"]
        gflops = (f"{r['gflops']:.0f} ({100 * r['peak_share']:.0f}%)" if "gflops" in r else "")
        lines.append(f"| {name} | {fmt(r['jax'])} {unit} | {fmt(r['torch'])} {unit} | "
                     f"{r['ratio']['median']:.2f}x ({r['ratio']['min']:.2f}-"
                     f"{r['ratio']['max']:.2f}) | {gflops} |")
    e, k, c = results["epoch"], results["sampling"], results["commands"]
    lines += ["", "| measure | value |", "|---|---|",
              f"| VAE epoch, jaxtrain fit (batch {e['batch_size']}: data, steps, eval, PNGs, "
              f"checkpoint) | {e['epoch_s']['jax']:.2f} s |",
              f"| VAE epoch, classic PyTorch script (same model and batch) | "
              f"{e['epoch_s']['torch']:.2f} s |",
              f"| epoch speed-up, pair by pair | {e['ratio']['median']:.2f}x "
              f"({e['ratio']['min']:.2f}-{e['ratio']['max']:.2f}) |",
              f"| data loading, share of step time | {100 * e['data_share_of_steps']:.1f}% |",
              f"| checkpoint save in fit, the part that blocks the loop (async save) | "
              f"{1000 * e['save_block_s']:.0f} ms, "
              f"{100 * e['save_block_s'] / e['epoch_s']['jax']:.1f}% of the epoch |",
              f"| checkpoint save, whole (blocking + background write) | "
              f"{1000 * e['save_s']['median']:.0f} ms, {100 * e['save_share_of_epoch']:.1f}% "
              "of the epoch |",
              f"| sample {k['n']} digits, with KV cache | {fmt(k['with_cache_s'], 2)} s |",
              f"| sample {k['n']} digits, without cache | {fmt(k['without_cache_s'], 2)} s "
              f"({k['speedup']:.0f}x slower) |",
              f"| `jaxtrain --help` | {fmt(c['help_s'], 2)} s |",
              f"| `jaxtrain sample --class 7` (VAE, end to end) | {fmt(c['sample_s'], 2)} s |"]
    if "whole" in results:
        lines += whole_markdown(results["whole"])
    return "\n".join(lines) + "\n"


def whole_markdown(whole):
    """The whole-command section: a table, then each case's start lines."""
    lines = ["", "Whole commands, timed from the shell (interpreter, imports, data, compiles, "
             "steps, evaluations, saves, exit). Cold: an empty compilation cache; warm: the "
             "cache the cold run filled (the median, min-max, where a case ran it more than "
             "once). Ratio: the PyTorch script's seconds / jaxtrain's. Validation: the last "
             "record's test_loss of the warm run, a run's result that should move only with "
             "a change meant to move it (baby GPT at nanoGPT's work, 480 validation windows: "
             "1.6527 nats/char since that command's first run on 2026-12-03; its history "
             "before then, at other evaluation sizes: docs/performance.md)."
             " Peak RSS: the command's maximum resident set, cold / warm.", "",
             "| command | jaxtrain, cold cache | jaxtrain, warm cache | PyTorch script | "
             "ratio cold / warm | validation | peak RSS |", "|---|---|---|---|---|---|---|"]
    for name, r in whole["cases"].items():
        theirs = (f"{r['torch_s']['median']:.1f} s | {r['ratio_cold']:.2f}x / "
                  f"{r['ratio_warm']:.2f}x" if "torch_s" in r else "— | —")
        rss = r.get("peak_rss_mb")
        rss = f"{rss['cold']:,.0f} / {rss['warm']:,.0f} MB" if rss else "—"
        lines.append(f"| {name} | {r['cold_s']:.1f} s (first step at "
                     f"{r['first_step_s']['cold']:.1f} s) | {fmt(r['warm_s'], 1)} s (first step "
                     f"at {r['first_step_s']['warm']:.1f} s) | {theirs} | "
                     f"{r['test_loss']:.4f} | {rss} |")
    lines += ["", "Where each jaxtrain command's start went (its first record):", ""]
    for name, r in whole["cases"].items():
        lines += [f"- {name}, cold: `{r['start']['cold']}`",
                  f"- {name}, warm: `{r['start']['warm']}`"]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=DataConfig().data_dir)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the tests")
    parser.add_argument("--only", choices=["generation", "baby-gpt"],
                        help="run these rows alone: generation (text, KV-cache decoder "
                             "against PyTorch eager), into <out>/generation.{json,md}; "
                             "baby-gpt (nanoGPT's baby GPT at equal work: steps, where "
                             "they go, whole commands), into <out>/baby_gpt.{json,md}")
    args = parser.parse_args()
    # jaxtrain's process settings (training/host/workarounds.py), as `jaxtrain fit` makes them. They
    # are process-wide: the PyTorch side of the in-process cases runs with them too.
    malloc_kept = tune_host()
    torch.set_num_threads(os.cpu_count())
    quick = args.quick
    repeats = 1 if quick else args.repeats
    few = min(repeats, 3)  # the long cases: Transformers, whole epoch, first step (15 min)
    n = 256 if quick else 2048
    machine = {"date": datetime.date.today().isoformat(), "cpu": platform.processor() or
               _cpu_name(), "cores": os.cpu_count(), "jax": jax.__version__,
               "torch": torch.__version__, "repeats": repeats, "repeats_long": few, "matmul_n": n,
               "malloc_keeps_freed": malloc_kept, "isa": _vector_isa(),
               "load_before": loadavg()}
    results = {"machine": machine, "cases": {}}
    generation = text_generation.TINY if quick else text_generation.FULL

    def case(name, fn, *a):
        load, t0 = loadavg(), time.perf_counter()
        print(f"{name} ...", file=sys.stderr, flush=True)
        out = fn(*a)
        out["load_before"], out["case_s"] = load, time.perf_counter() - t0
        print(f"{name}: {out['case_s']:.0f} s", file=sys.stderr, flush=True)
        return out

    if args.only == "generation":
        made = case("text generation", text_generation.generation, generation, repeats)
        machine["load_after"] = loadavg()
        print(text_generation.write(made, machine, args.out))
        return
    results["matmul_peak"] = case("matmul peak", matmul_peak, n, repeats)
    peak = results["matmul_peak"]["peak_gflops"]
    if args.only == "baby-gpt":
        results.update(case("baby GPT", baby_gpt, repeats, peak))
        machine["load_after"] = loadavg()
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "baby_gpt.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "baby_gpt.md").write_text(baby_gpt_markdown(results))
        print(baby_gpt_markdown(results))
        return
    # quick: the code paths, with models as tiny as the tests' (compiling is their cost)
    vae = dataclasses.replace(VAE, encoder_widths=(32,), decoder_widths=(32,), latent_dim=4) \
        if quick else VAE
    for b in (8,) if quick else (64, 128, 512):
        results["cases"][f"VAE train step, batch {b}"] = case(
            f"VAE step {b}", vae_step, b, 2 if quick else max(10, 6400 // b), repeats, peak,
            1, vae)
    # The same steps, PER_CALL to a call of the compiled program (--steps-per-call).
    b = 8 if quick else 128
    results["cases"][f"VAE train step, batch {b}, {PER_CALL} steps per call"] = case(
        f"VAE step {b} x{PER_CALL}", vae_step, b, 2 * PER_CALL if quick else 6400 // b,
        repeats, peak, PER_CALL, vae)
    tiny = dict(layers=1, d_model=32, heads=2) if quick else {}
    # quick: 8 x 8 images (16 tokens), the code path of MNIST's 196 at a twelfth the steps
    shape = (8, 8, 1) if quick else SHAPE
    digits = TransformerConfig(**tiny, image_shape=shape, context=num_patches(shape))
    text_ctx = 16 if quick else 256
    steps, b = (1, 4) if quick else (3, 32)
    transformers = (
        (f"digits ({digits.context} tokens, dropout 0.1)", digits),
        (f"text (context {text_ctx}, dropout 0.1)",
         TransformerConfig(**tiny, context=text_ctx, vocab_size=65, output_size=65)),
        (f"text (context {text_ctx}, dropout 0)",
         TransformerConfig(**tiny, context=text_ctx, vocab_size=65, output_size=65,
                           dropout=0.0)))
    for name, config in transformers[:2] if quick else transformers:  # quick: the code paths
        kind = "digits" if name.startswith("digits") else "text"
        results["cases"][f"Transformer {name}, batch {b}"] = case(
            f"Transformer {name}", transformer_step, kind, config, b, steps, few, peak)
    epoch = case("whole VAE epoch", whole_epoch, args.dataset, args.data_dir,
                 8 if quick else 128, few, "cpu", vae)
    epoch["batch_size"] = 8 if quick else 128
    results["epoch"] = epoch
    drawn = 2 if quick else 16
    results["sampling"] = case("KV-cache sampling", kv_cache_sampling,
                               digits.replace(dropout=0.0), drawn, repeats)
    results["sampling"]["n"] = drawn
    results["generation"] = case("text generation", text_generation.generation, generation,
                                 few)
    results["cases"].update(text_generation.cases(results["generation"]))
    results["commands"] = {
        "help_s": command_seconds(["--help"], repeats),
        "sample_s": command_seconds(["sample", "--workdir", epoch["workdir"], "--class", "7",
                                     "--out", str(Path(epoch["workdir"]) / "s.png")], repeats)}
    results["whole"] = case("whole commands", whole_commands, args.dataset, args.data_dir,
                            few, quick)
    machine["load_after"] = loadavg()

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results)
    (args.out / "bench.md").write_text(table)
    text_generation.write(results["generation"], machine, args.out)
    print(table)


def _vector_isa() -> str:
    """The widest vector instructions the CPU reports (XLA and PyTorch pick kernels by
    it): AVX-512, AVX2 or another."""
    flags = next((line.split(":", 1)[1].split() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "other"


def _cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


if __name__ == "__main__":
    main()
