"""The training loop and the commands built on it: fit, resume, evaluate, sample.

Model-agnostic: a model family (see models/vae.py) supplies init, losses and images;
this module owns data order, steps, metrics, checkpoints and interruption.
"""

import dataclasses
import functools
import json
import os
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

from jaxtrain.training import checkpoint
from jaxtrain.training.config import RunConfig, default_data_dir
from jaxtrain.training.errors import Interrupted
from jaxtrain.training.images import save_grid
from jaxtrain.training.parallel import DataParallel, is_primary, local_copy, sync_processes
from jaxtrain.training.steps import (
    create_state,
    make_eval_step,
    make_optimizer,
    make_schedule,
    make_train_step,
    run_keys,
)
from jaxtrain.training.text import TextSource, build_vocab, decode, encode, read_text

LOG_EVERY = 50  # steps between host reads of the loss for the progress bar
RUN_FILES = ("metrics.jsonl", "*_epoch[0-9][0-9][0-9].png", "*_step[0-9]*.png")

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


def use_compilation_cache() -> None:
    """Keeps compiled programs on disk (JAX's persistent compilation cache), so a later
    command on the same model skips XLA compilation (a tiny Transformer fit: 25.5 s ->
    11 s). The folder is JAX_COMPILATION_CACHE_DIR, else <cache>/jaxtrain/xla. JAX's size
    cap (LRU eviction) is left off: with it, processes writing the same entry at once
    (xdist workers, the processes of one run) race on its access-time files."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(Path(default_data_dir()) / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def say(message: str) -> None:
    """A progress line on stderr, from the first process only."""
    if is_primary():
        print(message, file=sys.stderr, flush=True)


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
    """Everything built from a RunConfig and the data's steps per epoch (None for text)."""

    def __init__(self, config: RunConfig, steps_per_epoch: int | None, devices: int | None = 1):
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        train = config.train
        self.parallel = DataParallel(devices)
        self.parallel.check_batch_size(train.batch_size)
        self.total_steps = train.steps or train.epochs * steps_per_epoch
        self.eval_every = train.eval_every or steps_per_epoch or 250
        self.family = config.family()
        self.schedule = make_schedule(train, self.total_steps)
        self.tx = make_optimizer(train, self.schedule)
        # Built once per run, so each compiles once.
        self.train_step = make_train_step(self.family, self.schedule, train.ema_decay,
                                          self.parallel)
        self.eval_step = make_eval_step(self.family, self.parallel)

    def init_state(self):
        state = create_state(self.family, self.config.train, self.tx)
        return jax.device_put(state, self.parallel.replicated)

    def abstract_state(self):
        """The restore target: the state's shapes, replicated on this run's devices."""
        return self.parallel.abstract(
            jax.eval_shape(lambda: create_state(self.family, self.config.train, self.tx)))

    def where(self, step: int) -> str:
        """'step 936/4680 (epoch 2/10)', or 'step 250/2000' for a text run."""
        text = f"step {step}/{self.total_steps}"
        if self.steps_per_epoch and self.config.train.epochs:
            epoch = step / self.steps_per_epoch
            shown = f"{epoch:.0f}" if epoch == int(epoch) else f"{epoch:.2f}"
            text += f" (epoch {shown}/{self.config.train.epochs})"
        return text


def _target(config, position, devices=1):
    return Run(config, position["steps_per_epoch"], devices).abstract_state()


def open_source(config: RunConfig):
    """The run's data: images by epoch, or text windows by step."""
    if config.data.is_text:
        return TextSource(config.data.data_file, config.data.vocab, config.model_config.context,
                          config.train.batch_size, config.train.seed)
    # torch and torchvision (about 4 s to import) are needed only to read images, so
    # sampling and text runs do without them.
    from jaxtrain.training import data

    return data.ImageSource(config.data.dataset, config.data.data_dir, config.data.download,
                            config.train.batch_size, config.train.seed)


def evaluate(run: Run, params, source) -> dict:
    """Mean test metrics over every test example (or fixed text window) exactly once."""
    key = run_keys(run.config.train.seed)["eval"]
    sums = None
    for i, batch in enumerate(source.eval_batches()):
        s = run.eval_step(params, run.parallel.put_batch(batch), jax.random.fold_in(key, i))
        sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
    sums = jax.device_get(sums)
    count = sums.pop("count")
    return run.family.finalize({k: float(v / count) for k, v in sums.items()})


def describe(metrics: dict) -> str:
    """'test loss 237.93 (recon 225.71, kl 12.22)': the test loss and its companions."""
    rest = ", ".join(f"{k} {v:.2f}" if abs(v) >= 10 else f"{k} {v:.4g}"
                     for k, v in metrics.items() if k != "test_loss")
    return f"test loss {metrics['test_loss']:.2f} ({rest})"


def _mean_train_metrics(metrics: list) -> dict:
    if not metrics:
        return {}
    metrics = jax.device_get(metrics)
    out = {f"train_{k}": float(np.mean([m[k] for m in metrics])) for k in metrics[0]}
    out["lr"] = float(metrics[-1]["lr"])  # the rate at the end of the period
    del out["train_lr"]
    return out


def train(run: Run, workdir: Path, state, source, start_step=0, stop_at_step=None):
    """Trains from `start_step` to the end of the run (or `stop_at_step`), evaluating and
    saving a checkpoint every `run.eval_every` steps and at the end. On SIGINT/SIGTERM
    saves and raises Interrupted."""
    end = min(run.total_steps, stop_at_step or run.total_steps)
    manager = checkpoint.open_manager(workdir, run.config.train.keep)
    batches = source.train_batches(start_step)
    step = start_step
    try:
        with StopOnSignal() as stop:
            say(f"training {run.config.model} on {run.config.data.dataset}: from "
                  f"{run.where(step)} to step {end}, batch {run.config.train.batch_size}, "
                f"evaluating every {run.eval_every} steps, workdir {workdir}"
                + (f", {run.parallel.devices} devices" if run.parallel.devices > 1 else ""))
            while step < end:
                next_eval = min(end, (step // run.eval_every + 1) * run.eval_every)
                state = _train_period(run, workdir, state, source, batches, manager, stop,
                                      step, next_eval)
                step = next_eval
        manager.wait_until_finished()
    finally:
        manager.close()
    return state


def _train_period(run, workdir, state, source, batches, manager, stop, step, end):
    """Steps `step` to `end`, then evaluation, images, a checkpoint and a metrics record."""
    B = run.config.train.batch_size
    t0 = time.perf_counter()
    data_time, metrics = 0.0, []
    # The bar counts tokens (Transformer) or examples (VAE), so its rate reads tokens/s.
    per_step = B * (run.family.tokens_per_example or 1)
    bar = tqdm(total=(end - step) * per_step, unit="tok" if run.family.tokens_per_example
               else "img", unit_scale=True, leave=False, desc=f"steps {step}-{end}",
               disable=None if is_primary() else True)
    for step in range(step, end):
        t_data = time.perf_counter()
        batch = run.parallel.put_batch(next(batches))
        data_time += time.perf_counter() - t_data
        state, step_metrics = run.train_step(state, batch)
        metrics.append(step_metrics)
        bar.update(per_step)
        if len(metrics) % LOG_EVERY == 0:
            bar.set_postfix(loss=f"{float(step_metrics['loss']):.3g}")  # one sync per LOG_EVERY
        if stop.signum is not None:
            bar.close()
            position = {"step": step + 1, "steps_per_epoch": run.steps_per_epoch}
            checkpoint.save(manager, state, position, run.config)
            manager.wait_until_finished()
            raise Interrupted(
                f"{signal.Signals(stop.signum).name}: saved {run.where(step + 1)} in {workdir}; "
                f"continue with: jaxtrain resume --workdir {workdir}", 128 + stop.signum)
    bar.close()
    jax.block_until_ready(state)
    train_time = time.perf_counter() - t0

    t_eval = time.perf_counter()
    test = evaluate(run, state.ema_params, source)
    eval_time = time.perf_counter() - t_eval
    if is_primary():
        _write_images(run, local_copy(state.ema_params), source, workdir, end)
    position = {"step": end, "steps_per_epoch": run.steps_per_epoch}
    t_save = time.perf_counter()
    checkpoint.save(manager, state, position, run.config, metrics={"test_loss": test["test_loss"]})
    save_time = time.perf_counter() - t_save  # the blocking part of the async save

    record = {"step": end, **_epoch_of(run, end), **_mean_train_metrics(metrics),
              **{k if k.startswith("test_") else f"test_{k}": v for k, v in test.items()},
              "train_steps": len(metrics), "samples_per_s": len(metrics) * B / train_time,
              "train_s": train_time, "data_s": data_time, "eval_s": eval_time,
              "save_s": save_time}
    if run.family.tokens_per_example:
        record["tokens_per_s"] = record["samples_per_s"] * run.family.tokens_per_example
    record["period_s"] = time.perf_counter() - t0
    if not is_primary():
        return state
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    train_part = (f"train loss {record['train_loss']:.3g} {run.family.train_loss_unit}  "
                  if metrics else "")
    rate = (f"{record['tokens_per_s']:,.0f} tokens/s" if "tokens_per_s" in record
            else f"{record['samples_per_s']:,.0f} samples/s")
    print(f"{run.where(end)}  {train_part}{describe(test)}  {rate}  {record['period_s']:.1f}s",
          flush=True)
    return state


def _epoch_of(run: Run, step: int) -> dict:
    if not run.steps_per_epoch:
        return {}
    epoch = step / run.steps_per_epoch
    return {"epoch": int(epoch) if epoch.is_integer() else epoch}


def _write_images(run: Run, params, source, workdir: Path, step: int) -> None:
    """The family's PNG grids at this step, from the data's preview and the run's fixed
    sampling key. Named by epoch for epoch runs (samples_epoch003.png), else by step."""
    grids = run.family.epoch_images(params, run_keys(run.config.train.seed)["sample"],
                                    source.preview())
    if run.steps_per_epoch and step % run.steps_per_epoch == 0:
        suffix = f"epoch{step // run.steps_per_epoch:03d}"
    else:
        suffix = f"step{step:07d}"
    for name, (grid, cols) in grids.items():
        save_grid(grid, cols, workdir / f"{name}_{suffix}.png")


def _stop_step(run: Run, stop_at_epoch):
    if stop_at_epoch is None:
        return None
    if not run.steps_per_epoch:
        raise ValueError("--stop-at-epoch needs a run measured in epochs")
    return stop_at_epoch * run.steps_per_epoch


def fit(config: RunConfig, workdir, overwrite=False, stop_at_epoch=None, devices=None):
    """Starts a new run in `workdir`, data-parallel over `devices` (all when None)."""
    workdir = Path(workdir)
    if _holds_run(workdir) and not overwrite:
        raise ValueError(f"{workdir} already holds a run: continue it with `jaxtrain resume "
                         f"--workdir {workdir}`, or pass --overwrite to start over")
    if config.data.is_text and config.data.vocab is None:
        vocab = build_vocab(read_text(config.data.data_file))
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, vocab=vocab),
            model_config=config.model_config.replace(vocab_size=len(vocab),
                                                     output_size=len(vocab)))
    source = open_source(config)
    run = Run(config, source.steps_per_epoch, devices)
    # Only now that data and config are good is an old run (with --overwrite) removed.
    if _holds_run(workdir) and is_primary():
        _clear_run(workdir)
    sync_processes("cleared the workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    train(run, workdir, run.init_state(), source, stop_at_step=_stop_step(run, stop_at_epoch))
    return run


def _with(config: RunConfig, data_dir=None, data_file=None, **train) -> RunConfig:
    """The config with the data location and training-length overrides of a command."""
    data_changes = {k: str(v) for k, v in (("data_dir", data_dir), ("data_file", data_file))
                    if v is not None}
    train = {k: v for k, v in train.items() if v is not None}
    if data_file is not None and not config.data.is_text:
        raise ValueError("--data-file applies to text runs only")
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **data_changes),
                               train=dataclasses.replace(config.train, **train))


def resume(workdir, epochs=None, steps=None, data_dir=None, data_file=None, stop_at_epoch=None,
           devices=None):
    """Continues the run in `workdir` from its newest checkpoint that restores, on
    `devices` (all when None; any number, whatever the run was saved on)."""
    workdir = Path(workdir)
    restored = checkpoint.restore(workdir, functools.partial(_target, devices=devices))
    config, position = restored.config, restored.position
    if epochs is not None and config.train.epochs is None:
        raise ValueError("this run is measured in steps: pass --steps N, not --epochs")
    if steps is not None and config.train.steps is None:
        raise ValueError("this run is measured in epochs: pass --epochs N, not --steps")
    config = _with(config, data_dir, data_file, epochs=epochs, steps=steps)
    run = Run(config, position["steps_per_epoch"], devices)
    step = position["step"]
    if step >= run.total_steps:
        unit = "--epochs" if config.train.epochs else "--steps"
        raise ValueError(f"the run in {workdir} already finished ({run.where(step)}): pass "
                         f"{unit} N (larger) to train longer")
    stop_at_step = _stop_step(run, stop_at_epoch)
    if stop_at_step is not None and stop_at_step <= step:
        raise ValueError(f"--stop-at-epoch {stop_at_epoch} is not after the run's "
                         f"{run.where(step)}: pass a later epoch")
    source = open_source(config)
    if source.steps_per_epoch != position["steps_per_epoch"]:
        raise ValueError(f"the data gives {source.steps_per_epoch} steps per epoch, but the run "
                         f"was trained with {position['steps_per_epoch']}: point --data-dir at "
                         "the data the run was started with")
    if is_primary():
        checkpoint.move_aside(workdir, restored.broken)
    sync_processes("moved broken checkpoints aside")
    # The schedule may have changed (--epochs/--steps), and the optimizer is static state.
    state = restored.state.replace(tx=run.tx)
    say(f"resuming from {run.where(step)}")
    train(run, workdir, state, source, step, stop_at_step)
    return run


def eval_checkpoint(workdir, step=None, data_dir=None, data_file=None) -> dict:
    """Test metrics of the EMA parameters of a checkpoint (latest by default)."""
    restored = checkpoint.restore(workdir, _target, step)
    config = _with(restored.config, data_dir, data_file)
    source = open_source(config)
    run = Run(config, restored.position["steps_per_epoch"])
    metrics = evaluate(run, restored.state.ema_params, source)
    at = restored.position["step"]
    return {**metrics, "step": at, **_epoch_of(run, at), "dataset": config.data.dataset,
            "model": config.model, "test_examples": source.eval_examples}


def _restore_for_sampling(workdir, step, options):
    restored = checkpoint.restore(workdir, _target, step)
    family = restored.config.family()
    for name, value in options.items():
        if value is not None and name not in family.sample_options:
            raise ValueError(f"--{name.replace('_', '-')} does not apply to a "
                             f"{restored.config.model} run")
    return restored, family, {k: v for k, v in options.items() if v is not None}


def sample(workdir, label, num: int, out=None, seed: int = 0, step=None, **options) -> Path:
    """Writes a PNG grid of generated images of class `label` (an int, or "all" for one
    row per class) from the EMA parameters. `options` (temperature, top_k) go to
    families that take them; a value given to one that does not is an error."""
    restored, family, options = _restore_for_sampling(workdir, step, options)
    if restored.config.data.is_text:
        raise ValueError("--class applies to digit models; this is a text model: pass "
                         "--prompt TEXT")
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


def sample_text(workdir, prompt: str, length: int, seed: int = 0, step=None, **options) -> str:
    """The prompt followed by `length` generated characters, from the EMA parameters."""
    restored, family, options = _restore_for_sampling(workdir, step, options)
    if not restored.config.data.is_text:
        raise ValueError("--prompt applies to text models; this is a digits model: pass "
                         "--class N")
    tokens = encode(prompt, restored.config.data.vocab)
    out = family.generate(restored.state.ema_params, tokens, length, jax.random.PRNGKey(seed),
                          **options)
    return prompt + decode(out, restored.config.data.vocab)
