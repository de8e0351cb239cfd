"""Orbax checkpoints of a run: TrainState, data position and the full config, per step.

Layout: <workdir>/checkpoints/<step>/{state, position, config}. The manager keeps the
latest `keep` checkpoints plus the one with the best test loss. A checkpoint that no
longer restores is skipped with a warning, never deleted. Readers that only use the
model (eval, sample, export) restore the state's EMA parameters alone.
"""

import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Any

import absl.logging
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jaxtrain.training.engine.parallel import DataParallel
from jaxtrain.training.engine.run import Run
from jaxtrain.training.engine.steps import param_shapes
from jaxtrain.training.rundir.workdir import CHECKPOINTS, check_not_file
from jaxtrain.training.settings.config import RunConfig, RunMismatch

# Orbax logs routine warnings through absl (a save without metrics; eval's read-only
# manager: "Given directory is read only"): every command that opens checkpoints is quiet.
absl.logging.set_verbosity(absl.logging.ERROR)


def checkpoint_dir(workdir) -> Path:
    return Path(workdir).absolute() / CHECKPOINTS


def _test_loss(metrics):
    return metrics["test_loss"]


def open_manager(workdir, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        # best_fn makes the manager write the metrics next to each checkpoint, so the
        # best one is still known after a restart.
        best_fn=_test_loss, best_mode="min",
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(n=keep),
            policies.BestN(get_metric_fn=_test_loss, reverse=True, n=1,
                           keep_checkpoints_without_metrics=False),
        ]),
        # A save killed half-way leaves <step>.orbax-checkpoint-tmp*; it is never a
        # checkpoint, so a writer may remove it.
        cleanup_tmp_directories=not read_only,
        read_only=read_only, create=not read_only)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager, state, position: dict, config: RunConfig, metrics=None) -> None:
    """Starts an async save of step `state.step`; call manager.wait_until_finished() to block."""
    manager.save(int(state.step), metrics=metrics, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        position=ocp.args.JsonSave(position),
        config=ocp.args.JsonSave(config.to_dict())))


@dataclasses.dataclass
class Restored:
    step: int
    config: RunConfig
    position: dict  # {"step", "steps_per_epoch" (None for text)}: where training continues
    state: Any  # the TrainState; None where the EMA parameters alone were read
    broken: list  # newer steps that failed to restore
    ema_params: Any = None


def _restore_step(manager, step, devices, ema_only: bool) -> Restored:
    meta = manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore(), position=ocp.args.JsonRestore()))
    config = RunConfig.from_dict(meta.config)
    position = dict(meta.position)
    if ema_only:
        # The parameters' shapes from the saved config (its blocks' layout included), on
        # this run's devices: Orbax reads that subtree and leaves the optimizer state and
        # the training parameters on disk.
        target = {"ema_params": DataParallel(devices).abstract(param_shapes(config.family()))}
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True)))
        return Restored(step, config, position, None, [], restored.state["ema_params"])
    # The saved run rebuilt from its config: the state's shapes, on this run's devices.
    target = Run(config, position["steps_per_epoch"], devices).abstract_state()
    try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))
    except Exception:
        check_optimizer_state(manager.directory / str(step) / "state", target.opt_state)
        raise  # a damaged checkpoint
    return Restored(step, config, position, restored.state, [], restored.state.ema_params)


def check_optimizer_state(folder, built) -> None:
    """Raises a one-line RunMismatch if the optimizer state saved in `folder` (a step's
    state item) is not a tree like `built`, the one the run's config builds today (a
    checkpoint of another jaxtrain, whose optimizer was another chain): Orbax's own
    error is a page, and an older checkpoint of the run would not restore either."""
    try:
        saved = ocp.StandardCheckpointHandler().metadata(folder).tree["opt_state"]
    except Exception:  # unreadable metadata: a damaged checkpoint, not this mismatch
        return
    where = _difference(saved, ocp.tree.serialize_tree(built, keep_empty_nodes=True))
    if where is not None:
        raise RunMismatch(
            f"checkpoint step {folder.parent.name} in {folder.parent.parent} holds an "
            f"optimizer state that this jaxtrain does not build from the run's config "
            f"({where}): it was saved by another jaxtrain version; resume it with that "
            "version, or start again with `jaxtrain fit --overwrite`") from None


def _kind(node) -> str:
    """A serialized tree node in words; an array's shape is not its structure."""
    if isinstance(node, dict) and node:
        return "{" + ", ".join(sorted(node)) + "}"
    if isinstance(node, (list, tuple)) and node:
        return f"a list of {len(node)}"
    if node is None or isinstance(node, (dict, list, tuple)):
        return "an empty state"  # optax's EmptyState, MaskedNode, ...
    return "an array"


def _difference(saved, built, path="opt_state") -> str | None:
    """Where two serialized trees first differ, in words ('opt_state/1/1: the
    checkpoint holds an empty state, this jaxtrain builds {inner_state}'), or None."""
    if _kind(saved) != _kind(built):
        return f"{path}: the checkpoint holds {_kind(saved)}, this jaxtrain builds {_kind(built)}"
    if isinstance(saved, dict):
        pairs = [(k, saved[k], built[k]) for k in sorted(saved)]
    elif isinstance(saved, (list, tuple)):
        pairs = [(i, a, b) for i, (a, b) in enumerate(zip(saved, built))]
    else:
        pairs = []
    return next((d for k, a, b in pairs if (d := _difference(a, b, f"{path}/{k}"))), None)


def check_workdir(workdir) -> None:
    """Raises a one-line ValueError unless `workdir` is a folder with a checkpoints/ one."""
    workdir = Path(workdir)
    check_not_file(workdir)
    if not workdir.is_dir():
        raise ValueError(f"workdir {workdir} does not exist: pass --workdir of a run "
                         "made by `jaxtrain fit`")
    if not checkpoint_dir(workdir).is_dir():
        raise ValueError(f"{workdir} holds no jaxtrain checkpoints: pass --workdir of a run "
                         "made by `jaxtrain fit`")


READS = 3  # tries of a reader whose listed step a training run deletes under it


def restore(workdir, step: int | str | None = None, devices: int | None = 1,
            ema_only: bool = False) -> Restored:
    """Restores `step` ("best": the one with the lowest test loss), or else the newest
    checkpoint that restores, as the TrainState of the saved run replicated on `devices`
    (any number, whatever the run was saved on; None: all); with `ema_only`, its EMA
    parameters alone (`state` None: no optimizer is built, its state is not read).
    Raises ValueError if none does. A reader (eval, sample) may run while the run
    trains: where the run's retention deletes a step this one is listing, it reads the
    folder again."""
    workdir = Path(workdir)
    check_workdir(workdir)
    for attempt in range(READS):
        try:
            return _restore(workdir, step, devices, ema_only)
        except FileNotFoundError:
            if attempt == READS - 1:
                raise


def _restore(workdir: Path, step, devices, ema_only: bool) -> Restored:
    manager = open_manager(workdir, read_only=True)
    try:
        steps = sorted(manager.all_steps(), reverse=True)
        if not steps:
            raise ValueError(f"no checkpoint in {checkpoint_dir(workdir)}: the run saved "
                             "none yet; start it again with `jaxtrain fit --overwrite`")
        if step == "best":
            step = manager.best_step()
            if step is None:
                raise ValueError(f"no checkpoint in {checkpoint_dir(workdir)} has a test "
                                 "loss yet: pass --step N or leave --step out")
        if step is not None:
            if step not in steps:
                raise ValueError(f"no checkpoint for step {step} in {checkpoint_dir(workdir)}: "
                                 f"available steps are {sorted(steps)}")
            steps = [step]
        broken = []
        for s in steps:
            try:
                result = _restore_step(manager, s, devices, ema_only)
                result.broken = broken
                return result
            except RunMismatch:
                raise
            except Exception as e:  # Orbax raises many kinds for a damaged checkpoint
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                print(f"warning: checkpoint step {s} in {checkpoint_dir(workdir)} does not "
                      f"restore ({reason}); trying an older one", file=sys.stderr)
                broken.append(s)
        raise ValueError(f"no checkpoint in {checkpoint_dir(workdir)} restores (tried steps "
                         f"{broken}): the run cannot continue; start again with "
                         "`jaxtrain fit --overwrite`")
    finally:
        manager.close()


def move_aside(workdir, steps) -> None:
    """Moves broken checkpoints out of the manager's way (a resumed run will save those
    step numbers again), into <workdir>/broken-checkpoints/, without deleting them."""
    dest = Path(workdir) / "broken-checkpoints"
    for s in steps:
        dest.mkdir(exist_ok=True)
        target = dest / str(s)
        n = 1
        while target.exists():
            target, n = dest / f"{s}.{n}", n + 1
        shutil.move(str(checkpoint_dir(workdir) / str(s)), str(target))
        print(f"warning: moved the broken checkpoint {s} to {target}", file=sys.stderr)
