"""nanoGPT's CPU "baby GPT" as a PyTorch eager script with jaxtrain's model and loop, as a
whole command: `make bench` times it against the same `jaxtrain fit` (dropout 0).

    python benchmarks/torch_char_script.py --data-file F [--steps 2000]

The first 90% of the file trains (random windows of 64 characters, batch 12), the last
10% validates: every 250 steps and at the end, the loss on the same 256 evenly spaced
windows jaxtrain uses, then as many characters sampled as its TensorBoard sample
(the context's 64; without a cache, as nanoGPT's generate). AdamW with clipping, linear
warmup (200 steps) from lr/100 then cosine decay to lr/100, as jaxtrain. Imports torch
only (no JAX).
"""

import argparse
import math

import numpy as np
import torch
import torch_reference as ref  # benchmarks/, beside this script

CONTEXT, BATCH, EVAL_WINDOWS = 64, 12, 256
PREVIEW = CONTEXT  # models/charlm.py: PREVIEW_CHARS, at most the context


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-file", required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    text = open(args.data_file, encoding="utf-8").read()
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    tokens = torch.tensor([index[c] for c in text], device=device)
    split = int(0.9 * len(tokens))
    train, val = tokens[:split], tokens[split:]
    starts = np.linspace(0, len(val) - CONTEXT - 1, EVAL_WINDOWS).round().astype(np.int64)
    val_windows = torch.stack([val[s:s + CONTEXT + 1] for s in starts])
    model = ref.TorchTransformer(len(vocab), len(vocab), CONTEXT, 4, 128, 4, 0.0).to(device)
    step = ref.make_step(model, ref.lm_loss, lr=args.lr)

    def lr_at(i):
        if i < 200:
            return 0.01 + 0.99 * i / 200
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (i - 200) / (args.steps - 200)))

    generator = torch.Generator().manual_seed(0)
    for i in range(1, args.steps + 1):
        for group in step.optimizer.param_groups:
            group["lr"] = args.lr * lr_at(i - 1)
        at = torch.randint(len(train) - CONTEXT - 1, (BATCH,), generator=generator)
        windows = torch.stack([train[s:s + CONTEXT + 1] for s in at])
        step(windows[:, :-1], windows[:, 1:])
        if i % args.eval_every == 0 or i == args.steps:
            model.eval()
            with torch.no_grad():
                loss = sum(float(ref.lm_loss(model, w[:, :-1], w[:, 1:])) * len(w)
                           for w in val_windows.split(BATCH)) / EVAL_WINDOWS
                out = val_windows[:1, :1]
                for _ in range(PREVIEW):
                    logits = model(out[:, -CONTEXT:])[:, -1]
                    out = torch.cat([out, torch.multinomial(logits.softmax(-1), 1)], 1)
            model.train()
            print(f"step {i}: val loss {loss:.3f}", flush=True)


if __name__ == "__main__":
    main()
