"""The defaults that are not a field's own, resolved in one place: the values that
differ between families and tasks (FAMILY_DEFAULTS, layered under the user's settings by
training/settings/files.py:resolve), and the two that depend on the data (`fitted`):
a family's warmup and steps per call, fitted to the run's length and evaluation period
once its steps per epoch are known. commands/prepare.py:prepare calls `fitted` once, and
nothing changes the config after it (but --steps-per-call 0, a measured choice).
"""

import dataclasses

# Defaults that differ between families and tasks ({section: {field: value}}), applied
# over the field defaults: everything not named here is the field's own default.
FAMILY_DEFAULTS = {
    # VAE lr 4e-3: Fashion-MNIST -ELBO after 10 epochs 235.47, against 235.88 with 2e-3.
    # steps_per_call 10: a warm 3-epoch fit, 15.6 -> 13.0 s on 2 cores (2026-12-01).
    "vae": {"train": {"batch_size": 128, "lr": 4e-3, "steps_per_call": 10}},
    # conv: one step a call; XLA:CPU convolutions in a lax.scan are 7x slower (66/476 ms).
    # On a GPU `fitted` gives it the VAE's 10 (GPU_STEPS_PER_CALL).
    "vae-conv": {"train": {"steps_per_call": 1}},
    "transformer": {"train": {"batch_size": 32, "lr": 1e-3, "warmup_steps": 200}},
    "text": {"train": {"epochs": None, "steps": 2000, "eval_every": 250},
             "model_config": {"context": 256}},
}
# The settings `fitted` may change, as (section, key): those the user did not set.
FITTED = (("train", "warmup_steps"), ("train", "steps_per_call"))
# The conv VAE's steps per call off a CPU: the VAE's. On an H200, 10 epochs of Fashion-
# MNIST trained in 19.5 s with one step a call, 6.7 s with 10 (2026-12-04,
# benchmarks/results/gpu/vae_networks.md).
GPU_STEPS_PER_CALL = FAMILY_DEFAULTS["vae"]["train"]["steps_per_call"]


def conv_vae(config) -> bool:
    return config.model == "vae" and getattr(config.model_config, "network", None) == "conv"


def family_layers(model: str, dataset: str, network: str | None) -> list[dict]:
    """The FAMILY_DEFAULTS that apply to a run of `model` on `dataset`, lowest first."""
    layers = [FAMILY_DEFAULTS[model]] if model in FAMILY_DEFAULTS else []
    if dataset == "text" and model == "transformer":  # else RunConfig says what is wrong
        layers.append(FAMILY_DEFAULTS["text"])
    if model == "vae" and network == "conv":
        layers.append(FAMILY_DEFAULTS["vae-conv"])
    return layers


def family_warmup(warmup: int, total_steps: int) -> int:
    """A family's default warmup (the Transformer's 200), at most a tenth of the run: a
    short run never fails on a --warmup-steps nobody passed."""
    return min(warmup, total_steps // 10)


def eval_period(train, steps_per_epoch: int | None) -> int:
    """Steps between evaluations: --eval-every, else an epoch, else 250."""
    return train.eval_every or steps_per_epoch or 250


def to_fit(config, given) -> tuple:
    """The (section, key)s whose value `fitted` may still change once the data is known
    (what --print-config leaves unset, so that its file fits them alike)."""
    train = config.train
    out = []
    if ("train", "warmup_steps") not in given and train.warmup_steps and train.epochs:
        out.append(("train", "warmup_steps"))
    if ("train", "steps_per_call") not in given and (train.steps_per_call > 1
                                                     or conv_vae(config)):
        out.append(("train", "steps_per_call"))
    return tuple(out)


def fitted(config, given, steps_per_epoch: int | None, backend: str = "cpu"):
    """The run's final config (a RunConfig) once its data gives its steps per epoch and
    JAX its `backend`: of the FITTED settings that no layer set (`given`: the (section,
    key)s a preset, file or flag set), a run in epochs has its family's warmup at most a
    tenth of the run (a run in steps had it at resolve); the conv VAE off a CPU takes
    GPU_STEPS_PER_CALL; and the family's steps per call (the VAE's 10) stays only where S
    steps fit between two evaluations, else 1: a short run never fails on a value nobody
    passed."""
    train, changes = config.train, {}
    if ("train", "warmup_steps") not in given and train.warmup_steps and train.epochs \
            and steps_per_epoch:
        changes["warmup_steps"] = family_warmup(train.warmup_steps,
                                                train.epochs * steps_per_epoch)
    steps_per_call = train.steps_per_call
    if ("train", "steps_per_call") not in given and backend != "cpu" and conv_vae(config):
        changes["steps_per_call"] = steps_per_call = GPU_STEPS_PER_CALL
    if ("train", "steps_per_call") not in given and \
            steps_per_call > eval_period(train, steps_per_epoch):
        changes["steps_per_call"] = 1
    if not changes:
        return config
    return dataclasses.replace(config, train=dataclasses.replace(train, **changes))
