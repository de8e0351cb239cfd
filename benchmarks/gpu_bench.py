"""jaxtrain against PyTorch CUDA eager on one GPU, side by side: benchmarks/gpu_check.sh
runs it (docs/gpu.md).

    python benchmarks/gpu_bench.py --out DIR --data-dir DIR [--quick]

The cases of `make bench` (benchmarks/bench.py: same models, losses, optimizer and
alternating repeats), each in float32 and bf16 (jaxtrain `--precision bf16`; PyTorch
under `torch.autocast(bfloat16)`, its usual mixed precision), the whole VAE epoch, and
a resume check: a run stopped after epoch 1 and resumed equals the straight run
bitwise, on the GPU. Each case's result (or its error) is written as soon as it ends,
so a check cut short still reports what it measured. --quick runs the code paths at
tiny sizes on any machine (the tests).
"""

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import bench
import jax
import numpy as np
import torch
import torch_reference as ref  # benchmarks/, beside this script

from jaxtrain.models.charlm import CharLMFamily
from jaxtrain.models.pixel_lm import PixelLMFamily, num_patches
from jaxtrain.models.transformer import PATCH_SYMBOLS, TransformerConfig
from jaxtrain.models.vae import VAEFamily
from jaxtrain.training.sources.tokenizer import CharTokenizer

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def synced(fn):
    """fn, then a wait for the GPU: PyTorch's kernels run asynchronously."""
    def call():
        fn()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
    return call


def torch_step(model, loss_fn, precision, **kwargs):
    """PyTorch's train step on DEVICE; bf16 is autocast around the forward and loss."""
    model = model.to(DEVICE)

    def loss(m, *batch):
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return loss_fn(m, *batch)

    return ref.make_step(model, loss, **kwargs)


def vae_case(precision, batch_size, steps, repeats):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, *bench.SHAPE), dtype=np.uint8)
    labels = rng.integers(0, 10, batch_size)
    ours = bench.jax_steps(VAEFamily(bench.VAE, precision),
                           {"image": images, "label": labels.astype(np.int32)}, steps, batch_size)
    batch = (torch.from_numpy(images.reshape(batch_size, -1) / np.float32(255)).to(DEVICE),
             torch.from_numpy(labels).to(DEVICE))
    theirs = synced(bench.torch_steps(torch_step(ref.TorchVAE(), ref.vae_loss, precision,
                                                 lr=2e-3), batch, steps))
    out = bench.side_by_side(ours, theirs, batch_size * steps, repeats)
    return {**out, "unit": "samples/s"}


def transformer_case(kind, config, precision, batch_size, steps, repeats):
    rng = np.random.default_rng(0)
    if kind == "digits":
        family = PixelLMFamily(config, precision)
        images = rng.integers(0, 256, (batch_size, *config.image_shape), dtype=np.uint8)
        labels = rng.integers(0, 10, batch_size)
        ours_batch = {"image": images, "label": labels.astype(np.int32)}
        tokens = torch.from_numpy(rng.integers(0, PATCH_SYMBOLS, (batch_size, config.context)))
        inputs = torch.cat([PATCH_SYMBOLS + torch.from_numpy(labels)[:, None],
                            tokens[:, :-1]], 1)
        batch = (inputs, tokens)
    else:
        chars = "".join(chr(33 + i) for i in range(config.vocab_size))
        family = CharLMFamily(config, CharTokenizer(chars), precision)
        tokens = rng.integers(0, config.vocab_size, (batch_size, config.context + 1))
        ours_batch = {"tokens": tokens.astype(np.int32)}
        tokens = torch.from_numpy(tokens)
        batch = (tokens[:, :-1], tokens[:, 1:])
    ours = bench.jax_steps(family, ours_batch, steps, batch_size)
    model = ref.TorchTransformer(config.vocab_size, config.output_size, config.context,
                                 config.layers, config.d_model, config.heads, config.dropout)
    theirs = synced(bench.torch_steps(torch_step(model, ref.lm_loss, precision),
                                      tuple(b.to(DEVICE) for b in batch), steps))
    out = bench.side_by_side(ours, theirs, batch_size * config.context * steps, repeats)
    out["attention"] = family.attention
    per_token = bench.step_flops(family, ours_batch, batch_size) / config.context
    out["gflops"] = out["jax"]["median"] * per_token / 1e9
    return {**out, "unit": "tokens/s"}


def write_subset(data_dir: Path, root: Path, train: int, test: int):
    """The first `train`/`test` Fashion-MNIST images as an MNIST-layout IDX folder."""
    raw_in, raw_out = data_dir / "FashionMNIST" / "raw", root / "MNIST" / "raw"
    raw_out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("t10k", test)):
        for kind, header in (("images-idx3", 16), ("labels-idx1", 8)):
            blob = (raw_in / f"{split}-{kind}-ubyte").read_bytes()
            size = 784 if kind.startswith("images") else 1
            head = bytearray(blob[:header])
            head[4:8] = n.to_bytes(4, "big")
            (raw_out / f"{split}-{kind}-ubyte").write_bytes(
                bytes(head) + blob[header:header + n * size])


def resume_case(data_dir: Path, flags: list[str], train_images: int):
    """Straight 2 epochs against 1 epoch + resume, as whole commands; bitwise equal?"""
    from jaxtrain.training.rundir import checkpoint

    root = Path(tempfile.mkdtemp())
    write_subset(data_dir, root / "data", train_images, 512)
    base = [sys.executable, "-m", "jaxtrain.cli.main"]
    fit = ["fit", "--dataset", "mnist", "--data-dir", str(root / "data"), "--epochs", "2",
           "--no-download", "--warmup-steps", "1", *flags]
    logs, seconds = [], {}
    for name, args in (("straight", fit + ["--workdir", str(root / "a")]),
                       ("stopped", fit + ["--workdir", str(root / "b"), "--stop-at-epoch", "1"]),
                       ("resumed", ["resume", "--workdir", str(root / "b")])):
        t0 = time.perf_counter()
        proc = subprocess.run(base + args, capture_output=True, text=True)
        seconds[name] = time.perf_counter() - t0
        logs.append(proc.stderr[-2000:])
        if proc.returncode:
            raise RuntimeError(f"{name} failed: {proc.stderr[-1500:]}")
    a, b = (checkpoint.restore(root / w) for w in ("a", "b"))
    leaves = list(zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True))
    differ = sum(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in leaves)
    first = next((line for line in logs[0].splitlines() if line.startswith("training ")), "")
    return {"flags": " ".join(flags), "step": int(a.step), "leaves": len(leaves),
            "leaves_differing": differ, "bitwise_equal": differ == 0, "seconds": seconds,
            "first_line": first}


def whole_commands(record, data_dir: Path, quick: bool, text: Path | None):
    """The issue's whole commands on the GPU, cold and warm compilation cache
    (bench.whole_command), against the PyTorch CUDA scripts: the default VAE for 3 epochs
    (time to its first step is in its start line), the digits Transformer for 1 epoch,
    nanoGPT's baby GPT for 2000 steps on the Vim manual."""
    images = ["--dataset", "fashion-mnist", "--data-dir", str(data_dir), "--no-download"]
    here = Path(__file__).resolve().parent
    if quick:  # the code path, tiny
        record("whole", "VAE fit, 4 tiny steps", bench.whole_command,
               [*images, "--steps", 4, "--batch-size", 8, "--encoder-widths", 32,
                "--decoder-widths", 32], None, 1)
        return
    record("whole", "VAE fit, 3 epochs", bench.whole_command, [*images, "--epochs", 3],
           [sys.executable, str(here / "torch_vae_script.py"), "--dataset", "fashion-mnist",
            "--data-dir", str(data_dir), "--epochs", "3"], 1)
    record("whole", "digits Transformer, 1 epoch", bench.whole_command,
           ["--model", "transformer", *images, "--epochs", 1], None, 1)
    baby_gpt(record, text)


def baby_gpt(record, text: Path | None):
    """nanoGPT's baby GPT for 2000 steps at equal work (bench.baby_gpt_commands: its
    evaluations, checkpoints and per-step loss reads on both sides), jaxtrain cold and
    warm, against the PyTorch script on CUDA (it takes the GPU when there is one)."""
    text = text or bench.vim_manual()
    if text:
        record("whole", "baby GPT, 2000 steps, nanoGPT's work", bench.whole_command,
               *bench.baby_gpt_commands(text), 1)


def markdown(results) -> str:
    m = results["machine"]
    lines = [f"Measured {m['date']} on {m['gpu']} ({m['host_cores']} CPU cores), jax "
             f"{m['jax']}, torch {m['torch']}."]
    if results["cases"]:
        lines[0] += (f" Median (min-max) of {m['repeats']} alternating repeats; ratio = "
                     "jaxtrain / PyTorch CUDA eager (bf16: `torch.autocast`), pair by pair.")
        lines += ["", "| case | precision | jaxtrain | PyTorch | ratio | attention |",
                  "|---|---|---|---|---|---|"]
    for name, r in results["cases"].items():
        if "error" in r:
            lines.append(f"| {name} | | error: {r['error'][:120]} | | | |")
            continue
        unit = r.get("unit", "samples/s")
        lines.append(f"| {name} | {r['precision']} | {bench.fmt(r['jax'])} {unit} | "
                     f"{bench.fmt(r['torch'])} {unit} | {r['ratio']['median']:.2f}x "
                     f"({r['ratio']['min']:.2f}-{r['ratio']['max']:.2f}) | "
                     f"{r.get('attention', '')} |")
    for name, r in results["checks"].items():
        if "error" in r:
            lines.append(f"\n{name}: error: {r['error'][:300]}")
        elif "epoch_s" in r:
            lines.append(f"\n{name}: jaxtrain fit {r['epoch_s']['jax']:.2f} s, classic PyTorch "
                         f"script {r['epoch_s']['torch']:.2f} s: {r['ratio']['median']:.2f}x")
        else:
            lines.append(f"\n{name} ({r['flags']}): {r['leaves_differing']} of {r['leaves']} "
                         f"state arrays differ after step {r['step']} "
                         f"({'bitwise equal' if r['bitwise_equal'] else 'NOT equal'}); "
                         f"`{r['first_line']}`")
    whole = {k: r for k, r in results["whole"]["cases"].items() if "error" not in r}
    if whole:
        lines += bench.whole_markdown({"cases": whole})
    for name, r in results["whole"]["cases"].items():
        if "error" in r:
            lines.append(f"\n{name} (whole command): error: {r['error'][:300]}")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="holds FashionMNIST/raw/ (the IDX files)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the tests")
    parser.add_argument("--section", choices=("all", "whole", "steps", "cases", "baby-gpt"),
                        default="all", help="whole: only the whole commands; steps: all but "
                        "them; cases: only the train steps; baby-gpt: only the baby GPT's "
                        "whole commands")
    parser.add_argument("--text", type=Path, default=None,
                        help="the baby GPT's text [default: the Vim manual, where installed]")
    args = parser.parse_args()
    quick, repeats = args.quick, 1 if args.quick else args.repeats
    gpu = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "no GPU (CPU fallback)"
    results = {"machine": {"date": datetime.date.today().isoformat(), "gpu": gpu,
                           "jax_devices": str(jax.devices()), "host_cores": bench.os.cpu_count(),
                           "jax": jax.__version__, "torch": torch.__version__,
                           "repeats": repeats, "xla_flags": bench.os.environ.get("XLA_FLAGS", "")},
               "cases": {}, "checks": {}, "whole": {"cases": {}}}
    args.out.mkdir(parents=True, exist_ok=True)

    def record(group, name, fn, *a, **extra):
        t0 = time.perf_counter()
        print(f"{name} ...", file=sys.stderr, flush=True)
        try:
            out = {**fn(*a), **extra}
        except Exception as e:  # a failed case must not lose the others' figures
            traceback.print_exc()
            out = {"error": f"{type(e).__name__}: {e}", **extra}
        out["case_s"] = time.perf_counter() - t0
        print(f"{name}: {out['case_s']:.0f} s", file=sys.stderr, flush=True)
        (results["whole"]["cases"] if group == "whole" else results[group])[name] = out
        (args.out / "gpu_bench.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "gpu_bench.md").write_text(markdown(results))

    if args.section in ("all", "whole"):
        whole_commands(record, args.data_dir, quick, args.text)
    if args.section == "baby-gpt":
        baby_gpt(record, args.text)
    if args.section in ("whole", "baby-gpt"):
        print(markdown(results))
        return
    tiny = dict(layers=1, d_model=32, heads=2) if quick else {}
    steps, b = (1, 4) if quick else (20, 32)
    text = TransformerConfig(**tiny, context=16 if quick else 256, vocab_size=65,
                             output_size=65, dropout=0.0)
    for precision in ("float32", "bf16"):
        record("cases", f"VAE train step, batch 128, {precision}", vae_case, precision,
               8 if quick else 128, 2 if quick else 50, repeats, precision=precision)
        record("cases", f"Transformer digits (dropout 0.1), batch {b}, {precision}",
               transformer_case, "digits",
               TransformerConfig(**tiny, image_shape=bench.SHAPE,
                                 context=num_patches(bench.SHAPE)),
               precision, b, steps, repeats, precision=precision)
        record("cases", f"Transformer text (context {text.context}, dropout 0), batch {b}, "
               f"{precision}", transformer_case, "text", text, precision, b, steps, repeats,
               precision=precision)
    if args.section == "cases":
        print(markdown(results))
        return
    record("checks", "whole VAE epoch (Fashion-MNIST, batch 128)", bench.whole_epoch,
           "fashion-mnist", args.data_dir, 128, 1 if quick else 2, DEVICE)
    small = ["--encoder-widths", "32", "--decoder-widths", "32", "--latent-dim", "4"]
    record("checks", "resume, VAE float32", resume_case, args.data_dir,
           small if quick else [], 256 if quick else 4096)
    digits_flags = ["--model", "transformer", "--precision", "bf16", "--dropout", "0"]
    record("checks", "resume, digits Transformer bf16", resume_case, args.data_dir,
           digits_flags + (["--layers", "1", "--d-model", "32", "--heads", "2"] if quick
                           else []), 64 if quick else 1024)
    print(markdown(results))


if __name__ == "__main__":
    main()
