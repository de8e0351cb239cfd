"""Seconds per epoch of the VAE, split into data alone, train steps alone, and eval.

    python benchmarks/vae_epoch.py [--dataset fashion-mnist] [--batch-size 128] [--repeats 3]

Data alone: iterate one epoch of jaxtrain's DataLoader. Steps alone: the jitted train
step on batches already in memory (compiled beforehand). Eval: one pass over the test
set. The whole epoch as `jaxtrain fit` runs it is in <workdir>/metrics.jsonl (epoch_s).
"""

import argparse
import itertools

import jax
from timing import timed  # benchmarks/timing.py, beside this script

from jaxtrain.models.vae import VAEConfig
from jaxtrain.training.engine.evaluate import evaluate
from jaxtrain.training.engine.run import Run
from jaxtrain.training.settings.config import DataConfig, RunConfig, TrainConfig
from jaxtrain.training.sources import images as data


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=DataConfig().data_dir)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    data_config = DataConfig(args.dataset, args.data_dir)
    source = data.ImageSource(data_config, args.batch_size, seed=0)
    steps = source.steps_per_epoch
    # The default run (the schedule's values do not change the speed).
    train = TrainConfig(batch_size=args.batch_size)
    config = RunConfig("vae", VAEConfig(image_shape=source.spec.shape), data_config, train)
    run = Run(config, steps)

    def epoch_of_batches():
        return itertools.islice(source.train_batches(0), steps)

    def data_epoch():
        for _ in epoch_of_batches():
            pass

    batches = list(epoch_of_batches())
    train_step = run.train_step
    state = run.init_state()
    state, _ = train_step(state, batches[0])  # compile
    jax.block_until_ready(state)

    def steps_epoch():
        nonlocal state
        for batch in batches:
            state, _ = train_step(state, batch)
        jax.block_until_ready(state)

    def data_and_steps_epoch():
        nonlocal state
        for batch in epoch_of_batches():
            state, _ = train_step(state, batch)
        jax.block_until_ready(state)

    evaluate(run, state.ema_params, source)  # compile
    test_ds = source.test

    print(f"{args.dataset}, batch {args.batch_size}, {steps} steps/epoch, "
          f"{len(test_ds)} test images; median (min-max) of {args.repeats}")
    for name, fn in (("data alone", data_epoch), ("train steps alone", steps_epoch),
                     ("data + steps", data_and_steps_epoch),
                     ("eval (test set)", lambda: evaluate(run, state.ema_params, source))):
        med, lo, hi = timed(fn, args.repeats)
        print(f"  {name:18s} {med:6.3f} s  ({lo:.3f}-{hi:.3f})")


if __name__ == "__main__":
    main()
