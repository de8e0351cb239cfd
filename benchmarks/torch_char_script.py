"""nanoGPT's CPU "baby GPT" as a PyTorch eager script: nanoGPT's train.py loop around
jaxtrain's model and optimizer, as a whole command. `make bench` times it against
`jaxtrain fit` doing the same work (benchmarks/bench.py:whole_commands).

    python benchmarks/torch_char_script.py --data-file F [--steps 2000] [--out-dir D]

What it does is what nanoGPT's README runs on a CPU (`python train.py
config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
--log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
--max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`), loop for loop:

- the first 90% of the file trains, the last 10% validates; a batch is 12 random windows
  of 64 characters, drawn while the previous step's loss is still in hand;
- every `eval_interval` (250) steps, from step 0, `estimate_loss`: the mean loss of
  `eval_iters` (20) random batches of the training text and 20 of the validation text;
  then, when the validation loss improved and the step is past 0, a checkpoint of the
  model and optimizer with torch.save (nanoGPT's always_save_checkpoint False);
- every `log_interval` (1) step, the loss read to the host (`loss.item()`) and a line
  printed.

nanoGPT's train.py runs max_iters + 1 steps (0 to 2000); this script runs `--steps`, as
jaxtrain does. The model, loss, AdamW with clipping and the LR schedule (linear warmup
for 200 steps from lr/100, cosine to lr/100) are jaxtrain's (torch_reference.py), so both
sides do the same arithmetic; the loop around them is nanoGPT's. Threads: PyTorch's
default (one per core), as a user gets them. The last line gives the seconds spent
evaluating (the step-0 evaluation apart: jaxtrain has none) and saving. Imports torch
only (no JAX).
"""

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch_reference as ref  # benchmarks/, beside this script

CONTEXT, BATCH, LAYERS, D_MODEL, HEADS = 64, 12, 4, 128, 4
EVAL_INTERVAL, EVAL_ITERS, LOG_INTERVAL = 250, 20, 1  # nanoGPT's baby GPT on a CPU


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-file", required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-interval", type=int, default=EVAL_INTERVAL)
    parser.add_argument("--eval-iters", type=int, default=EVAL_ITERS)
    parser.add_argument("--log-interval", type=int, default=LOG_INTERVAL)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out-dir", type=Path, help="where ckpt.pt goes [a temporary folder]")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    out_dir = args.out_dir or Path(tempfile.mkdtemp())
    out_dir.mkdir(parents=True, exist_ok=True)
    text = open(args.data_file, encoding="utf-8").read()
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    tokens = np.array([index[c] for c in text], np.uint16)  # nanoGPT's train.bin / val.bin
    split = int(0.9 * len(tokens))
    data = {"train": tokens[:split], "val": tokens[split:]}

    def get_batch(part):  # nanoGPT's get_batch
        d = data[part]
        ix = torch.randint(len(d) - CONTEXT, (BATCH,))
        x = torch.stack([torch.from_numpy(d[i:i + CONTEXT].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(d[i + 1:i + 1 + CONTEXT].astype(np.int64))
                         for i in ix])
        return x.to(device), y.to(device)

    model = ref.TorchTransformer(len(vocab), len(vocab), CONTEXT, LAYERS, D_MODEL, HEADS,
                                 0.0).to(device)
    step = ref.make_step(model, ref.lm_loss, lr=args.lr)

    @torch.no_grad()
    def estimate_loss():  # nanoGPT's estimate_loss
        out = {}
        model.eval()
        for part in ("train", "val"):
            losses = torch.zeros(args.eval_iters)
            for k in range(args.eval_iters):
                x, y = get_batch(part)
                losses[k] = ref.lm_loss(model, x, y).item()
            out[part] = losses.mean()
        model.train()
        return out

    def lr_at(i):
        if i < 200:
            return 0.01 + 0.99 * i / 200
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (i - 200) / (args.steps - 200)))

    torch.manual_seed(1337)
    best_val, eval_s, first_eval_s, save_s = 1e9, 0.0, 0.0, 0.0
    x, y = get_batch("train")
    t0 = time.perf_counter()
    for i in range(args.steps + 1):
        if i % args.eval_interval == 0 or i == args.steps:
            e0 = time.perf_counter()
            losses = estimate_loss()
            took = time.perf_counter() - e0
            eval_s += took
            first_eval_s = took if i == 0 else first_eval_s
            print(f"step {i}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}",
                  flush=True)
            if losses["val"] < best_val:
                best_val = losses["val"]
                if i > 0:
                    s0 = time.perf_counter()
                    torch.save({"model": model.state_dict(),
                                "optimizer": step.optimizer.state_dict(), "iter_num": i,
                                "best_val_loss": best_val}, out_dir / "ckpt.pt")
                    save_s += time.perf_counter() - s0
        if i == args.steps:
            break
        for group in step.optimizer.param_groups:
            group["lr"] = args.lr * lr_at(i)
        loss = step(x, y)
        x, y = get_batch("train")  # the next batch, as nanoGPT draws it
        if i % args.log_interval == 0:
            t1 = time.perf_counter()
            print(f"iter {i}: loss {loss.item():.4f}, time {(t1 - t0) * 1000:.2f}ms",
                  flush=True)
            t0 = t1
    print(f"done: {args.steps} steps; evaluations {eval_s:.1f} s (step 0: {first_eval_s:.1f} s), "
          f"checkpoints {save_s:.1f} s; val loss {best_val:.4f}", flush=True)


if __name__ == "__main__":
    main()
