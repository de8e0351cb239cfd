"""The training loop and the commands built on it: fit, resume, evaluate, sample.

Model-agnostic: a model family (see models/vae.py) supplies init, losses and images;
this module owns data order, steps, metrics, checkpoints and interruption.
"""

import dataclasses
import json
import shutil
import signal
import sys
import time
from pathlib import Path

import absl.logging
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxtrain.training import checkpoint, data
from jaxtrain.training.config import RunConfig
from jaxtrain.training.errors import Interrupted
from jaxtrain.training.images import save_grid
from jaxtrain.training.steps import (
    create_state,
    make_eval_step,
    make_optimizer,
    make_schedule,
    make_train_step,
    run_keys,
)

LOG_EVERY = 50  # steps between host reads of the loss for the progress bar
RUN_FILES = ("metrics.jsonl", "*_epoch[0-9][0-9][0-9].png")

# Orbax logs routine warnings (e.g. a save without metrics) through absl.
absl.logging.set_verbosity(absl.logging.ERROR)


class StopOnSignal:
    """Turns the first SIGINT/SIGTERM into a flag the loop checks after each step; a
    second one interrupts at once."""

    def __init__(self):
        self.signum = None

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)


def _holds_run(workdir: Path) -> bool:
    ckpt = checkpoint.checkpoint_dir(workdir)
    return (ckpt.is_dir() and any(ckpt.iterdir())) or (workdir / "metrics.jsonl").exists()


def _clear_run(workdir: Path) -> None:
    """Removes only what a run writes, never other files the user keeps there."""
    for folder in (checkpoint.checkpoint_dir(workdir), workdir / "broken-checkpoints"):
        if folder.is_dir():
            shutil.rmtree(folder)
    for pattern in RUN_FILES:
        for path in workdir.glob(pattern):
            path.unlink()


class Run:
    """Everything built from a RunConfig and the number of steps per epoch."""

    def __init__(self, config: RunConfig, steps_per_epoch: int):
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.family = config.family()
        self.schedule = make_schedule(config.train, config.train.epochs * steps_per_epoch)
        self.tx = make_optimizer(config.train, self.schedule)
        # Built once per run, so each compiles once.
        self.train_step = make_train_step(self.family, self.schedule, config.train.ema_decay)
        self.eval_step = make_eval_step(self.family)

    def init_state(self):
        return create_state(self.family, self.config.train, self.tx)

    def abstract_state(self):
        return jax.eval_shape(self.init_state)


def _target(config, position):
    return Run(config, position["steps_per_epoch"]).abstract_state()


def evaluate(run: Run, params, test_ds) -> dict:
    """Mean test metrics over every test example exactly once."""
    key = run_keys(run.config.train.seed)["eval"]
    sums = None
    for i, batch in enumerate(data.eval_loader(test_ds, run.config.train.batch_size)):
        s = run.eval_step(params, batch, jax.random.fold_in(key, i))
        sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
    sums = jax.device_get(sums)
    count = sums.pop("count")
    return run.family.finalize({k: float(v / count) for k, v in sums.items()})


def _write_epoch_images(run: Run, params, test_ds, workdir: Path, epoch: int) -> None:
    """The family's PNG grids for this epoch, from the first test images and the run's
    fixed sampling key."""
    n = run.config.model_config.num_classes
    images, labels, _ = (t.numpy() for t in test_ds.__getitems__(list(range(n))))
    grids = run.family.epoch_images(params, run_keys(run.config.train.seed)["sample"],
                                    images.astype(np.float32) / 255.0, labels.astype(np.int32))
    for name, (grid, cols) in grids.items():
        save_grid(grid, cols, workdir / f"{name}_epoch{epoch:03d}.png")


def describe(metrics: dict) -> str:
    """'test loss 237.93 (recon 225.71, kl 12.22)': the test loss and its companions."""
    rest = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "test_loss")
    return f"test loss {metrics['test_loss']:.2f} ({rest})"


def _mean_train_metrics(metrics: list) -> dict:
    if not metrics:
        return {}
    metrics = jax.device_get(metrics)
    out = {f"train_{k}": float(np.mean([m[k] for m in metrics])) for k in metrics[0]}
    out["lr"] = float(metrics[-1]["lr"])  # the rate at the end of the epoch
    del out["train_lr"]
    return out


def train(run: Run, workdir: Path, state, train_ds, test_ds, start_epoch=0, start_batch=0,
          stop_at_epoch=None):
    """Trains from (start_epoch, start_batch) to the end of the run, or to `stop_at_epoch`.
    Saves a checkpoint after every epoch; on SIGINT/SIGTERM saves and raises Interrupted."""
    config, B = run.config, run.config.train.batch_size
    end_epoch = min(config.train.epochs, stop_at_epoch or config.train.epochs)
    manager = checkpoint.open_manager(workdir, config.train.keep)
    try:
        with StopOnSignal() as stop:
            print(f"training {config.model} on {config.data.dataset}: epochs {start_epoch + 1}-"
                  f"{end_epoch} of {config.train.epochs}, {run.steps_per_epoch} steps of {B} "
                  f"per epoch, workdir {workdir}", file=sys.stderr, flush=True)
            for epoch in range(start_epoch, end_epoch):
                state = _train_epoch(run, workdir, state, train_ds, test_ds, manager, stop, epoch,
                                     start_batch if epoch == start_epoch else 0)
        manager.wait_until_finished()
    finally:
        manager.close()
    return state


def _train_epoch(run, workdir, state, train_ds, test_ds, manager, stop, epoch, start_batch):
    config, B = run.config, run.config.train.batch_size
    t0 = time.perf_counter()
    data_time, metrics = 0.0, []
    loader = data.train_loader(train_ds, B, config.train.seed, epoch, start_batch)
    bar = tqdm(total=run.steps_per_epoch, initial=start_batch, unit="step", leave=False,
               desc=f"epoch {epoch + 1}/{config.train.epochs}", disable=None)
    t_data = time.perf_counter()
    for batch_index, batch in enumerate(loader, start=start_batch):
        data_time += time.perf_counter() - t_data
        state, step_metrics = run.train_step(state, batch)
        metrics.append(step_metrics)
        bar.update()
        if len(metrics) % LOG_EVERY == 0:
            bar.set_postfix(loss=f"{float(step_metrics['loss']):.2f}")  # one sync per LOG_EVERY
        if stop.signum is not None:
            bar.close()
            position = {"epoch": epoch, "batch": batch_index + 1,
                        "steps_per_epoch": run.steps_per_epoch}
            checkpoint.save(manager, state, position, config)
            manager.wait_until_finished()
            name = signal.Signals(stop.signum).name
            raise Interrupted(
                f"{name}: saved step {int(state.step)} (epoch {epoch + 1}, batch "
                f"{batch_index + 1} of {run.steps_per_epoch}) in {workdir}; continue with: "
                f"jaxtrain resume --workdir {workdir}", 128 + stop.signum)
        t_data = time.perf_counter()
    bar.close()
    jax.block_until_ready(state)
    train_time = time.perf_counter() - t0

    t_eval = time.perf_counter()
    test = evaluate(run, state.ema_params, test_ds)
    eval_time = time.perf_counter() - t_eval
    _write_epoch_images(run, state.ema_params, test_ds, workdir, epoch + 1)
    position = {"epoch": epoch + 1, "batch": 0, "steps_per_epoch": run.steps_per_epoch}
    t_save = time.perf_counter()
    checkpoint.save(manager, state, position, config, metrics={"test_loss": test["test_loss"]})
    save_time = time.perf_counter() - t_save  # the blocking part of the async save

    record = {"epoch": epoch + 1, "step": int(state.step), **_mean_train_metrics(metrics),
              **{f"test_{k}" if not k.startswith("test_") else k: v for k, v in test.items()},
              "train_steps": len(metrics), "samples_per_s": len(metrics) * B / train_time,
              "train_s": train_time, "data_s": data_time, "eval_s": eval_time,
              "save_s": save_time, "epoch_s": time.perf_counter() - t0}
    if run.family.tokens_per_example:
        record["tokens_per_s"] = record["samples_per_s"] * run.family.tokens_per_example
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    train_part = (f"train loss {record['train_loss']:.3g} {run.family.train_loss_unit}  "
                  if metrics else "")
    print(f"epoch {epoch + 1}/{config.train.epochs}  step {record['step']}  {train_part}"
          f"{describe(test)}  "
          f"{record['samples_per_s']:.0f} samples/s  {record['epoch_s']:.1f}s", flush=True)
    return state


def fit(config: RunConfig, workdir, overwrite=False, stop_at_epoch=None):
    """Starts a new run in `workdir`."""
    workdir = Path(workdir)
    if _holds_run(workdir) and not overwrite:
        raise ValueError(f"{workdir} already holds a run: continue it with `jaxtrain resume "
                         f"--workdir {workdir}`, or pass --overwrite to start over")
    train_ds, test_ds = data.load_datasets(config.data.dataset, config.data.data_dir,
                                           config.data.download)
    steps = data.steps_per_epoch(train_ds, config.train.batch_size)
    if steps == 0:
        raise ValueError(f"--batch-size {config.train.batch_size} is larger than the "
                         f"{len(train_ds)} training examples: lower it")
    run = Run(config, steps)
    # Only now that data and config are good is an old run (with --overwrite) removed.
    if _holds_run(workdir):
        _clear_run(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    train(run, workdir, run.init_state(), train_ds, test_ds, stop_at_epoch=stop_at_epoch)
    return run


def resume(workdir, epochs=None, data_dir=None, stop_at_epoch=None):
    """Continues the run in `workdir` from its newest checkpoint that restores."""
    workdir = Path(workdir)
    restored = checkpoint.restore(workdir, _target)
    config, position = restored.config, restored.position
    if epochs is not None:
        if epochs < position["epoch"] + (position["batch"] > 0):
            raise ValueError(f"--epochs {epochs} is fewer than the {position['epoch']} epochs "
                             "already trained: pass a larger --epochs")
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
    if data_dir is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                      data_dir=str(data_dir)))
    if position["epoch"] >= config.train.epochs:
        raise ValueError(f"the run in {workdir} already finished its {config.train.epochs} "
                         "epochs: pass --epochs N (larger) to train longer")
    if stop_at_epoch is not None and stop_at_epoch <= position["epoch"]:
        raise ValueError(f"--stop-at-epoch {stop_at_epoch} is not after the {position['epoch']} "
                         "epochs already trained: pass a later epoch")
    train_ds, test_ds = data.load_datasets(config.data.dataset, config.data.data_dir,
                                           config.data.download)
    steps = data.steps_per_epoch(train_ds, config.train.batch_size)
    if steps != position["steps_per_epoch"]:
        raise ValueError(f"the data in {config.data.data_dir} gives {steps} steps per epoch, "
                         f"but the run was trained with {position['steps_per_epoch']}: "
                         "point --data-dir at the data the run was started with")
    checkpoint.move_aside(workdir, restored.broken)
    run = Run(config, steps)
    # The schedule may have changed (--epochs), and the optimizer is static state.
    state = restored.state.replace(tx=run.tx)
    print(f"resuming from step {restored.step} (epoch {position['epoch'] + 1}, batch "
          f"{position['batch']})", file=sys.stderr)
    train(run, workdir, state, train_ds, test_ds, position["epoch"], position["batch"],
          stop_at_epoch)
    return run


def eval_checkpoint(workdir, step=None, data_dir=None) -> dict:
    """Test metrics of the EMA parameters of a checkpoint (latest by default)."""
    restored = checkpoint.restore(workdir, _target, step)
    config = restored.config
    if data_dir is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                      data_dir=str(data_dir)))
    _, test_ds = data.load_datasets(config.data.dataset, config.data.data_dir,
                                    config.data.download)
    run = Run(config, restored.position["steps_per_epoch"])
    metrics = evaluate(run, restored.state.ema_params, test_ds)
    return {**metrics, "step": restored.step, "epoch": restored.position["epoch"],
            "batch": restored.position["batch"], "dataset": config.data.dataset,
            "model": config.model, "test_examples": len(test_ds)}


def sample(workdir, label, num: int, out=None, seed: int = 0, step=None, **options) -> Path:
    """Writes a PNG grid of generated images of class `label` (an int, or "all" for one
    row per class) from the EMA parameters. `options` (temperature, top_k) go to
    families that take them; a value given to one that does not is an error."""
    restored = checkpoint.restore(workdir, _target, step)
    family = restored.config.family()
    for name, value in options.items():
        if value is not None and name not in family.sample_options:
            raise ValueError(f"--{name.replace('_', '-')} does not apply to a "
                             f"{restored.config.model} run")
    options = {k: v for k, v in options.items() if v is not None}
    num_classes = restored.config.model_config.num_classes
    if label == "all":
        cols = -(-num // num_classes)
        labels = np.repeat(np.arange(num_classes), cols)
    else:
        if not 0 <= label < num_classes:
            raise ValueError(f"--class {label} is out of range: use 0-{num_classes - 1} or all")
        cols = int(np.ceil(np.sqrt(num)))
        labels = np.full(num, label)
    images = family.sample(restored.state.ema_params, labels, jax.random.PRNGKey(seed), **options)
    out = Path(out) if out else Path(workdir) / f"sample_class_{label}.png"
    return save_grid(images, cols, out)
