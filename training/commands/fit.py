"""The commands that train: fit and resume.

Each assembles a Run (training/engine/run.py), its callbacks (training/rundir/callbacks.py
and training/rundir/writers.py) and hands them to the loop (training/engine/loop.py).
"""

import dataclasses
from pathlib import Path

from jaxtrain.training.commands.prepare import (
    check_classes,
    check_val_file,
    prepare,
    with_data,
)
from jaxtrain.training.engine.calls import choose_steps_per_call
from jaxtrain.training.engine.evaluate import eval_batch_size
from jaxtrain.training.engine.loop import Loop, run_loop
from jaxtrain.training.engine.parallel import (
    DataParallel,
    check_shared,
    is_primary,
    say,
    sync_processes,
)
from jaxtrain.training.engine.precompile import precompile
from jaxtrain.training.engine.run import Run
from jaxtrain.training.engine.startup import StartCosts, Startup
from jaxtrain.training.host.signals import GUARD
from jaxtrain.training.rundir import checkpoint
from jaxtrain.training.rundir import workdir as workdirs
from jaxtrain.training.rundir.callbacks import (
    Announce,
    Checkpoint,
    EarlyStopping,
    NonFinite,
    Profile,
    Progress,
    Samples,
)
from jaxtrain.training.rundir.writers import (
    Console,
    Curves,
    Jsonl,
    TensorBoard,
    WandB,
    check_wandb,
)
from jaxtrain.training.settings.config import RunConfig
from jaxtrain.training.settings.files import to_toml
from jaxtrain.training.sources.base import import_data_modules, open_source


@dataclasses.dataclass(frozen=True)
class Extras:
    """Options of one invocation that are not part of the run's config."""

    stop_at_epoch: int | None = None
    devices: int | None = None
    profile_steps: tuple[int, int] | None = None  # [first, last) global steps
    peak_gflops: float | str | None = None  # GFLOP/s, or "auto" (training/host/peak.py)
    tensorboard: bool = True  # write <workdir>/tb/ event files


def train(run: Run, workdir: Path, state, source, start=0, stop_at_step=None,
          extras: Extras = Extras(), position=None, startup: Startup | None = None):
    """Trains from step `start` to the end of the run (or `stop_at_step`) with the
    standard callbacks; returns the final state. `startup` holds the command's start
    so far (training/engine/startup.py); without it (a caller that is not a command,
    such as a benchmark) the records have no start or compile report."""
    end = min(run.total_steps, stop_at_step or run.total_steps)
    manager = checkpoint.open_manager(workdir, run.config.train.keep)
    GUARD.manager = manager  # a signal's exit waits for its saves
    peak = extras.peak_gflops
    if peak == "auto":  # measured by the process that writes the records
        peak = None
        if is_primary():
            from jaxtrain.training.host.peak import peak_gflops

            peak, cached = peak_gflops()
            say(f"peak {peak:.0f} GFLOP/s (float32 matmul, "
                f"{'cached' if cached else 'measured once and cached'})")
    loop = Loop(run, workdir, state, source, start, end, dict(position or {}), peak_gflops=peak)
    callbacks = [Announce(start, end, workdir), Progress(), NonFinite(manager),
                 EarlyStopping(run.config.train.patience),
                 Samples(text=extras.tensorboard or run.config.train.wandb),
                 Checkpoint(manager)]
    if startup is not None:  # a command's, whose start the first record tells
        callbacks.insert(1, StartCosts(startup))
    if is_primary():  # the writers
        callbacks += [Console(), Jsonl(), Curves()]
        if extras.tensorboard:
            callbacks.append(TensorBoard(to_toml(run.config)))
        if run.config.train.wandb:
            callbacks.append(WandB(run.config))
    if extras.profile_steps:
        callbacks.insert(0, Profile(*extras.profile_steps))
    try:
        state = run_loop(loop, callbacks)
    finally:
        manager.close()
    if loop.step < run.total_steps and loop.stop_reason is None and is_primary():
        say(f"stopped at {run.where(loop.step)} (--stop-at-epoch); continue with: jaxtrain "
            f"resume --workdir {workdir}")
    return state


def _stop_step(run: Run, stop_at_epoch):
    if stop_at_epoch is None:
        return None
    if not run.steps_per_epoch:
        raise ValueError("--stop-at-epoch needs a run measured in epochs")
    step = stop_at_epoch * run.steps_per_epoch
    if step >= run.total_steps:
        say(f"--stop-at-epoch {stop_at_epoch} is not before the run's end ("
            f"{run.where(run.total_steps)}): the run trains to its end")
        return None
    return step


def _check_profile(run: Run, start: int, extras: Extras):
    if extras.profile_steps:
        first, last = extras.profile_steps
        if not start <= first < last <= run.total_steps:
            raise ValueError(f"--profile-steps {first}:{last} must lie within the steps this "
                             f"command trains ({start}-{run.total_steps}), first < last")


def fit(config: RunConfig, workdir, overwrite=False, extras: Extras = Extras(),
        given=frozenset()):
    """Starts a new run in `workdir`, data-parallel over `extras.devices` (all if None);
    with `config.train.init_from`, from another run's parameters (fine-tuning). The
    family defaults that no layer set (`given`: files.given of the layers) are fitted to
    the data (training/settings/defaults.py:fitted, in prepare)."""
    startup = Startup()
    workdir = Path(workdir)
    workdirs.check_not_file(workdir)
    if config.train.init_from and Path(config.train.init_from).absolute() == workdir.absolute():
        raise ValueError(f"--init-from {config.train.init_from} is the new run's own workdir: "
                         "fine-tune into another --workdir")
    if workdirs.holds_run(workdir) and not overwrite:
        raise ValueError(f"{workdir} already holds a run: continue it with `jaxtrain "
                         f"resume --workdir {workdir}`, or pass --overwrite to start over")
    # Taken before anything is read or cleared: a run being written is refused at once.
    if config.train.wandb and is_primary():  # before the data's seconds, not after
        check_wandb()
    lock = workdirs.Lock(workdir) if workdir.is_dir() and is_primary() else None
    try:
        # Device and batch errors come before the data's imports (seconds).
        DataParallel(extras.devices).check_batch_size(config.train.batch_size,
                                                      config.train.accumulate)
        import_data_modules(config)
        startup.lap("imports")
        config, start, source = prepare(config, given)  # the run's final config
        startup.lap("data")
        run = Run(config, source.steps_per_epoch, extras.devices)
        if start is not None:
            say(f"fine-tuning from {config.train.init_from} at step {config.train.init_step}"
                + (f", frozen: {','.join(config.train.freeze)}" if config.train.freeze else ""))
        _check_profile(run, 0, extras)
        stop_at_step = _stop_step(run, extras.stop_at_epoch)
        precompile(run, source, 0, eval_batch_size(run, source))
        state = run.init_state(start)
        startup.lap("init")
        if config.train.steps_per_call == 0:  # chosen from the step time, then saved
            seconds = choose_steps_per_call(run, state, next(source.train_batches(0)))
            config = run.config
            say(f"--steps-per-call 0: a step takes {1000 * seconds:.1f} ms, so "
                f"{run.steps_per_call} steps a call")
            startup.lap("probe")
        # Only now that data and config are good is the workdir made, or cleared.
        if is_primary():
            workdirs.create(workdir)
            lock = lock or workdirs.Lock(workdir)
            if workdirs.holds_run(workdir):
                workdirs.clear_run(workdir)
            (workdir / "config.toml").write_text(to_toml(config, workdir))
            if config.data.tokenizer_json:  # for other tools; the checkpoints hold it too
                (workdir / "tokenizer.json").write_text(config.data.tokenizer_json)
        # Where a signal looks for checkpoints: once this run holds it, cleared.
        GUARD.workdir = workdir.absolute()
        sync_processes("cleared the workdir")
        check_shared(workdir / "config.toml", "wrote")
        train(run, workdir, state, source, stop_at_step=stop_at_step, extras=extras,
              startup=startup)
        return run
    finally:
        startup.close()
        if lock is not None:
            lock.release()


def resume(workdir, overrides: dict | None = None, data_dir=None, data_file=None,
           extras: Extras = Extras(), val_file=None):
    """Continues the run in `workdir` from its newest checkpoint that restores, on
    `extras.devices` (any number, whatever the run was saved on). `overrides` are
    TrainConfig fields that leave the architecture alone (epochs, steps, lr, ...);
    `val_file` may only name the run's own validation text (prepare.check_val_file)."""
    startup = Startup()
    workdir = Path(workdir)
    check_shared(checkpoint.checkpoint_dir(workdir))
    checkpoint.check_workdir(workdir)
    lock = workdirs.Lock(workdir) if is_primary() else None
    GUARD.workdir = workdir.absolute()  # where a signal looks for checkpoints
    try:
        restored = checkpoint.restore(workdir, devices=extras.devices)
        startup.lap("restore")
        config, position = restored.config, dict(restored.position)
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        if "epochs" in overrides and config.train.epochs is None:
            raise ValueError("this run is measured in steps: pass --steps N, not --epochs")
        if "steps" in overrides and config.train.steps is None:
            raise ValueError("this run is measured in epochs: pass --epochs N, not --steps")
        check_val_file(config, val_file, workdir)
        config = with_data(config, data_dir, data_file, val_file, **overrides)
        if config.train.wandb and is_primary():
            check_wandb()
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
            done = step // run.steps_per_epoch if config.train.epochs else step
            if overrides.get(unit[2:]) is not None:  # a new length, not past what is done
                raise ValueError(f"{unit} {overrides[unit[2:]]} is not more than the "
                                 f"{done} {unit[2:]} the run in {workdir} has trained: pass "
                                 f"{unit} {done + 1} or more")
            raise ValueError(f"the run in {workdir} already finished ({run.where(step)}): pass "
                             f"{unit} N (larger than {done}) to train longer")
        stop_at_step = _stop_step(run, extras.stop_at_epoch)
        if stop_at_step is not None and stop_at_step <= step:
            raise ValueError(f"--stop-at-epoch {extras.stop_at_epoch} is not after the run's "
                             f"{run.where(step)}: pass a later epoch")
        _check_profile(run, step, extras)
        import_data_modules(config)
        startup.lap("imports")
        source = open_source(config)
        startup.lap("data")
        check_classes(config, source)
        if source.steps_per_epoch != position["steps_per_epoch"]:
            raise ValueError(f"the data gives {source.steps_per_epoch} steps per epoch, but "
                             f"the run was trained with {position['steps_per_epoch']}: point "
                             "--data-dir at the data the run was started with")
        if is_primary():
            checkpoint.move_aside(workdir, restored.broken)
            (workdir / "config.toml").write_text(to_toml(config, workdir))  # what runs now
        sync_processes("moved broken checkpoints aside")
        precompile(run, source, step, eval_batch_size(run, source))
        # The schedule may have changed (--epochs/--steps), and the optimizer is static state.
        state = restored.state.replace(tx=run.tx)
        say(f"resuming from {run.where(step)}")
        train(run, workdir, state, source, step, stop_at_step, extras, position, startup)
        return run
    finally:
        startup.close()
        if lock is not None:
            lock.release()
