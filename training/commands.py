"""The commands on top of the loop: fit, resume, evaluate a checkpoint, sample.

Each assembles a Run (training/run.py), its callbacks (training/callbacks.py and
training/writers.py) and hands them to the loop (training/loop.py).
"""

import dataclasses
import os
import time
from pathlib import Path

import absl.logging
import jax
import numpy as np

from jaxtrain.training import checkpoint
from jaxtrain.training import workdir as workdirs
from jaxtrain.training.callbacks import (
    Announce,
    Checkpoint,
    EarlyStopping,
    Evaluate,
    FinalEval,
    FirstStep,
    Images,
    NonFinite,
    Profile,
    Progress,
    say,
)
from jaxtrain.training.config import RunConfig, default_data_dir
from jaxtrain.training.config_file import to_toml
from jaxtrain.training.images import make_grid, save_grid
from jaxtrain.training.loop import Loop, run_loop
from jaxtrain.training.parallel import is_primary, sync_processes
from jaxtrain.training.prepare import check_classes, prepare, with_data
from jaxtrain.training.run import (
    Run,
    choose_steps_per_call,
    evaluate,
    evaluate_iw,
    open_source,
    restore_target,
)
from jaxtrain.training.text import decode, encode
from jaxtrain.training.writers import Console, Curves, Jsonl, TensorBoard

# Orbax logs routine warnings (e.g. a save without metrics) through absl.
absl.logging.set_verbosity(absl.logging.ERROR)


@dataclasses.dataclass(frozen=True)
class Extras:
    """Options of one invocation that are not part of the run's config."""

    stop_at_epoch: int | None = None
    devices: int | None = None
    profile_steps: tuple[int, int] | None = None  # [first, last) global steps
    peak_gflops: float | str | None = None  # GFLOP/s, or "auto" (training/peak.py)
    tensorboard: bool = True  # write <workdir>/tb/ event files


def use_compilation_cache() -> None:
    """Keeps compiled programs on disk (JAX's persistent compilation cache), so a later
    command on the same model skips XLA compilation (a tiny Transformer fit: 25.5 s ->
    11 s). The folder is JAX_COMPILATION_CACHE_DIR, else <cache>/jaxtrain/xla. JAX's size
    cap (LRU eviction) is left off: with it, processes writing the same entry at once
    (xdist workers, the processes of one run) race on its access-time files."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(Path(default_data_dir()) / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def train(run: Run, workdir: Path, state, source, start=0, stop_at_step=None,
          extras: Extras = Extras(), position=None):
    """Trains from step `start` to the end of the run (or `stop_at_step`) with the
    standard callbacks; returns the final state."""
    end = min(run.total_steps, stop_at_step or run.total_steps)
    manager = checkpoint.open_manager(workdir, run.config.train.keep)
    loop = Loop(run, workdir, state, source, start, end, dict(position or {}))
    peak = extras.peak_gflops
    if peak == "auto" and is_primary():
        from jaxtrain.training.peak import peak_gflops

        peak, cached = peak_gflops()
        say(f"peak {peak:.0f} GFLOP/s (float32 matmul, "
            f"{'cached' if cached else 'measured once and cached'})")
    callbacks = [Announce(start, end, workdir), FirstStep(), Progress(), Evaluate(),
                 FinalEval(), NonFinite(manager),
                 EarlyStopping(run.config.train.patience), Images(), Checkpoint(manager)]
    if is_primary():  # the writers
        callbacks += [Console(peak), Jsonl(), Curves()]
        if extras.tensorboard:
            callbacks.append(TensorBoard(to_toml(run.config)))
    if extras.profile_steps:
        callbacks.insert(0, Profile(*extras.profile_steps))
    try:
        return run_loop(loop, callbacks)
    finally:
        manager.close()


def _stop_step(run: Run, stop_at_epoch):
    if stop_at_epoch is None:
        return None
    if not run.steps_per_epoch:
        raise ValueError("--stop-at-epoch needs a run measured in epochs")
    return stop_at_epoch * run.steps_per_epoch


def _check_profile(run: Run, start: int, extras: Extras):
    if extras.profile_steps:
        first, last = extras.profile_steps
        if not start <= first < last <= run.total_steps:
            raise ValueError(f"--profile-steps {first}:{last} must lie within the steps this "
                             f"command trains ({start}-{run.total_steps}), first < last")


def fit(config: RunConfig, workdir, overwrite=False, extras: Extras = Extras()):
    """Starts a new run in `workdir`, data-parallel over `extras.devices` (all if None);
    with `config.train.init_from`, from another run's parameters (fine-tuning)."""
    workdir = Path(workdir)
    workdirs.check_not_file(workdir)
    if config.train.init_from and Path(config.train.init_from).absolute() == workdir.absolute():
        raise ValueError(f"--init-from {config.train.init_from} is the new run's own workdir: "
                         "fine-tune into another --workdir")
    if workdirs.holds_run(workdir) and not overwrite:
        raise ValueError(f"{workdir} already holds a run: continue it with `jaxtrain "
                         f"resume --workdir {workdir}`, or pass --overwrite to start over")
    # Taken before anything is read or cleared: a run being written is refused at once.
    lock = workdirs.Lock(workdir) if workdir.is_dir() and is_primary() else None
    try:
        config, start, source = prepare(config)
        run = Run(config, source.steps_per_epoch, extras.devices)
        if start is not None:
            say(f"fine-tuning from {config.train.init_from} at step {config.train.init_step}"
                + (f", frozen: {','.join(config.train.freeze)}" if config.train.freeze else ""))
        _check_profile(run, 0, extras)
        stop_at_step = _stop_step(run, extras.stop_at_epoch)
        state = run.init_state(start)
        if config.train.steps_per_call == 0:  # chosen from the step time, then saved
            seconds = choose_steps_per_call(run, state, next(source.train_batches(0)))
            config = run.config
            say(f"--steps-per-call 0: a step takes {1000 * seconds:.1f} ms, so "
                f"{run.steps_per_call} steps a call")
        # Only now that data and config are good is the workdir made, or cleared.
        if is_primary():
            workdirs.create(workdir)
            lock = lock or workdirs.Lock(workdir)
            if workdirs.holds_run(workdir):
                workdirs.clear_run(workdir)
            (workdir / "config.toml").write_text(to_toml(config, workdir))
        sync_processes("cleared the workdir")
        train(run, workdir, state, source, stop_at_step=stop_at_step, extras=extras)
        return run
    finally:
        if lock is not None:
            lock.release()


def resume(workdir, overrides: dict | None = None, data_dir=None, data_file=None,
           extras: Extras = Extras()):
    """Continues the run in `workdir` from its newest checkpoint that restores, on
    `extras.devices` (any number, whatever the run was saved on). `overrides` are
    TrainConfig fields that leave the architecture alone (epochs, steps, lr, ...)."""
    workdir = Path(workdir)
    checkpoint.check_workdir(workdir)
    lock = workdirs.Lock(workdir) if is_primary() else None
    try:
        restored = checkpoint.restore(
            workdir, lambda c, p: restore_target(c, p, extras.devices))
        config, position = restored.config, dict(restored.position)
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        if "epochs" in overrides and config.train.epochs is None:
            raise ValueError("this run is measured in steps: pass --steps N, not --epochs")
        if "steps" in overrides and config.train.steps is None:
            raise ValueError("this run is measured in epochs: pass --epochs N, not --steps")
        config = with_data(config, data_dir, data_file, **overrides)
        run = Run(config, position["steps_per_epoch"], extras.devices)
        step = position["step"]
        if position.get("stopped_early"):
            if config.train.patience and config.train.patience <= position["evals_since_best"]:
                raise ValueError(
                    f"the run in {workdir} stopped early at step {step} after "
                    f"{position['evals_since_best']} evaluations without a better test loss: "
                    f"to train on, pass --patience N (more than "
                    f"{position['evals_since_best']}) or --patience 0 (never stop)")
            position["stopped_early"] = False
        if step >= run.total_steps:
            unit = "--epochs" if config.train.epochs else "--steps"
            raise ValueError(f"the run in {workdir} already finished ({run.where(step)}): pass "
                             f"{unit} N (larger) to train longer")
        stop_at_step = _stop_step(run, extras.stop_at_epoch)
        if stop_at_step is not None and stop_at_step <= step:
            raise ValueError(f"--stop-at-epoch {extras.stop_at_epoch} is not after the run's "
                             f"{run.where(step)}: pass a later epoch")
        _check_profile(run, step, extras)
        source = open_source(config)
        check_classes(config, source)
        if source.steps_per_epoch != position["steps_per_epoch"]:
            raise ValueError(f"the data gives {source.steps_per_epoch} steps per epoch, but "
                             f"the run was trained with {position['steps_per_epoch']}: point "
                             "--data-dir at the data the run was started with")
        if is_primary():
            checkpoint.move_aside(workdir, restored.broken)
            (workdir / "config.toml").write_text(to_toml(config, workdir))  # what runs now
        sync_processes("moved broken checkpoints aside")
        # The schedule may have changed (--epochs/--steps), and the optimizer is static state.
        state = restored.state.replace(tx=run.tx)
        say(f"resuming from {run.where(step)}")
        train(run, workdir, state, source, step, stop_at_step, extras, position)
        return run
    finally:
        if lock is not None:
            lock.release()


def eval_checkpoint(workdir, step=None, data_dir=None, data_file=None,
                    iw_samples: int | None = None, samples: int | None = None) -> dict:
    """Test metrics of the EMA parameters of a checkpoint (latest by default; "best"); also
    the IW test NLL with `iw_samples` K (VAE), the judge's scores of `samples` N per class."""
    restored = checkpoint.restore(workdir, restore_target, step)
    config = with_data(restored.config, data_dir, data_file)
    if samples and config.data.is_text:
        raise ValueError("--samples scores image samples; this is a text run")
    source = open_source(config)
    check_classes(config, source)
    run = Run(config, restored.position["steps_per_epoch"])
    metrics = evaluate(run, restored.state.ema_params, source)
    if iw_samples:
        t = time.perf_counter()
        metrics.update(evaluate_iw(run, restored.state.ema_params, source, iw_samples))
        metrics["iw_s"] = time.perf_counter() - t
    if samples:
        from jaxtrain.training import judge, quality

        metrics.update(quality.sample_quality(run, restored.state.ema_params, source,
                                              judge.judge_of(config.data, source), samples))
    at = restored.position["step"]
    targets = getattr(run.family, "target_pixels", None)  # image families: binary or grey
    return {**metrics, "step": at, **run.epoch_of(at), "dataset": config.data.dataset,
            "model": config.model, "test_examples": source.eval_examples,
            **({"targets": targets} if targets else {})}


def sample(workdir, label=None, prompt=None, num: int = 64, out=None, seed: int = 0,
           step=None, length: int = 500, **options):
    """Generates from the EMA parameters of a checkpoint, the one entry for images and
    text. `label` is a class for image models (its index, its name for a folder
    dataset, or "all" for one row per class), whose PNG grid is written (its path
    returned); `prompt` a text for text models, whose continuation is returned.
    `options` (temperature, top_k) go to families that take them; a value given to one
    that does not is an error."""
    restored = checkpoint.restore(workdir, restore_target, step)
    config, params = restored.config, restored.state.ema_params
    family = config.family()
    for name, value in options.items():
        if value is not None and name not in family.sample_options:
            raise ValueError(f"--{name.replace('_', '-')} does not apply to a "
                             f"{config.model} run")
    options = {k: v for k, v in options.items() if v is not None}
    rng = jax.random.PRNGKey(seed)
    if prompt is not None:
        if not config.data.is_text:
            raise ValueError("--prompt applies to text models; this is an image model: pass "
                             "--class N")
        tokens = family.sample(params, encode(prompt, config.data.vocab), rng, length, **options)
        return prompt + decode(tokens, config.data.vocab)
    if config.data.is_text:
        raise ValueError("--class applies to image models; this is a text model: pass "
                         "--prompt TEXT")
    num_classes, names = config.model_config.num_classes, config.data.class_names
    row_names = None
    if label == "all":
        cols = -(-num // num_classes)
        labels = np.repeat(np.arange(num_classes), cols)
        row_names = names
    else:
        index = class_index(label, num_classes, names)
        cols = int(np.ceil(np.sqrt(num)))
        labels = np.full(num, index)
    images = family.sample(params, labels, rng, **options)
    out = Path(out) if out else Path(workdir) / f"sample_class_{label}.png"
    return save_grid(make_grid(images, cols, row_names=row_names), out)


def class_index(label, num_classes: int, names=None) -> int:
    """The index of class `label`: a number 0..n-1, or one of a folder's class names."""
    if names and str(label) in names:
        return names.index(str(label))
    try:
        index = int(label)
    except ValueError:
        known = f"one of {', '.join(names)}, " if names else ""
        raise ValueError(f"--class {label!r} is not a class of this run: use {known}"
                         f"0-{num_classes - 1} or all") from None
    if not 0 <= index < num_classes:
        raise ValueError(f"--class {label} is out of range: use 0-{num_classes - 1} or all")
    return index
