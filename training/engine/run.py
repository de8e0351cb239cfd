"""A run assembled from its config: the model family, the schedule and optimizer, the
jitted steps, and where a step lies in the run. The loop (training/engine/loop.py)
drives it; training/engine/evaluate.py evaluates it, or a saved run's `Evaluator`.
"""

import dataclasses

import jax

from jaxtrain.training.engine.optimizer import make_optimizer, make_schedule
from jaxtrain.training.engine.parallel import DataParallel
from jaxtrain.training.engine.steps import (
    create_state,
    make_eval_step,
    make_train_step,
    param_shapes,
    trainable_mask,
)
from jaxtrain.training.metrics import epoch_text
from jaxtrain.training.settings.config import RunConfig
from jaxtrain.training.settings.defaults import eval_period

_BUILT: dict = {}  # what _built made, newest last
_KEEP = 4  # configurations kept (each holds its compiled programs)


def _built(key, make):
    """make(), once per process for one `key` (a run's configuration): a second command
    of the same run in this process (fit, then eval or resume, in a notebook or a test)
    reuses the family, optimizer and jitted steps, so JAX's in-memory caches hold: no
    tracing, lowering or compiling again. An unhashable key builds anew."""
    try:
        hash(key)
    except TypeError:
        return make()
    if key in _BUILT:
        _BUILT[key] = _BUILT.pop(key)  # the newest
    else:
        _BUILT[key] = make()
        while len(_BUILT) > _KEEP:
            _BUILT.pop(next(iter(_BUILT)))
    return _BUILT[key]


def _key(config: RunConfig):
    """The configuration that decides a run's programs (the steps per call saved in it
    do not: each S has its own program)."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, steps_per_call=0))


class Evaluator:
    """What evaluating a run's parameters needs (training/engine/evaluate.py): its config,
    family, devices and jitted eval step. `eval` builds one for a saved run, without the
    optimizer, its schedule or the train steps; a `Run` is one."""

    def __init__(self, config: RunConfig, steps_per_epoch: int | None, devices: int | None = 1):
        self.config = config
        self.steps_per_epoch = steps_per_epoch

        def make():
            parallel = DataParallel(devices)
            family = config.family()
            return parallel, family, make_eval_step(family, parallel)

        self.parallel, self.family, self.eval_step = _built(
            ("eval", _key(config), devices, len(jax.devices())), make)

    def epoch_of(self, step: int) -> dict:
        """{"epoch": e} for runs measured in epochs (a float mid-epoch), else {}."""
        if not self.steps_per_epoch:
            return {}
        epoch = step / self.steps_per_epoch
        return {"epoch": int(epoch) if epoch.is_integer() else epoch}


class Run(Evaluator):
    """Everything built from a RunConfig and the data's steps per epoch (None for text)."""

    def __init__(self, config: RunConfig, steps_per_epoch: int | None, devices: int | None = 1):
        super().__init__(config, steps_per_epoch, devices)
        train = config.train
        self.parallel.check_batch_size(train.batch_size, train.accumulate)
        self.total_steps = train.steps or train.epochs * steps_per_epoch
        self.eval_every = eval_period(train, steps_per_epoch)
        # Training FLOPs of one example, from XLA's cost analysis of the compiled step
        # (training/engine/precompile.py); None until then.
        self.flops_per_example: float | None = None
        self._key = ("run", _key(config), self.total_steps, devices, len(jax.devices()))

        def make():
            schedule = make_schedule(train, self.total_steps)
            # A pytree of bools like the params (False: frozen), or None when all train.
            trainable = None if not train.freeze else trainable_mask(
                param_shapes(self.family), train.freeze)
            tx = make_optimizer(train, schedule, trainable, self.family.no_decay)
            step = make_train_step(self.family, schedule, train.ema_decay, self.parallel,
                                   train.accumulate, trainable)
            return {"schedule": schedule, "trainable": trainable, "tx": tx, "step": step,
                    "init": None}

        # Built once per run (and process), so each compiles once.
        self._programs = _built(self._key, make)
        self.schedule, self.trainable = self._programs["schedule"], self._programs["trainable"]
        self.tx, self.train_step = self._programs["tx"], self._programs["step"]
        # 0 (automatic): single steps until fit has chosen S (choose_steps_per_call).
        self.set_steps_per_call(train.steps_per_call or 1, save=bool(train.steps_per_call))

    def set_steps_per_call(self, s: int, save: bool = True):
        """S steps in one call (training/engine/loop.py:Loop.call_steps says when it is used);
        with `save`, S goes into the config saved with the run."""
        if s > self.eval_every:
            raise ValueError(f"--steps-per-call {s} is more than the {self.eval_every} steps "
                             "between evaluations: lower it")
        train = self.config.train
        if save:
            self.config = dataclasses.replace(
                self.config, train=dataclasses.replace(train, steps_per_call=s))
        self.steps_per_call = s
        self.train_steps = None if s == 1 else _built((*self._key, s), lambda: make_train_step(
            self.family, self.schedule, train.ema_decay, self.parallel, train.accumulate,
            self.trainable, s))

    def init_state(self, start=None):
        """The state at step 0; `start` = (params, ema_params) to fine-tune from. One
        compiled program (built once per run): run eagerly, the initialisers' operations
        would each compile on their own (a 4-layer Transformer: 15.7 s cold, 6.0 s from
        the compilation cache, against 5.7 s and 1.5 s jitted), and jitted they give the
        same bits."""
        if self._programs["init"] is None:
            family, train, tx = self.family, self.config.train, self.tx

            @jax.jit
            def init_state(start):  # the name the start line reports its compile under
                return create_state(family, train, tx, start)

            self._programs["init"] = init_state
        return jax.device_put(self._programs["init"](start), self.parallel.replicated)

    def abstract_state(self):
        """The restore target: the state's shapes, replicated on this run's devices."""
        return self.parallel.abstract(
            jax.eval_shape(lambda: create_state(self.family, self.config.train, self.tx)))

    def where(self, step: int) -> str:
        """'step 936/4680 (epoch 2/10)', or 'step 250/2000' for a text run."""
        text = f"step {step}/{self.total_steps}"
        if self.steps_per_epoch and self.config.train.epochs:
            text += (f" (epoch {epoch_text(step / self.steps_per_epoch)}/"
                     f"{self.config.train.epochs})")
        return text
