"""The Typer app and what its commands share: option helpers and small validators.

No JAX here: heavy imports happen inside the commands, so `--help` is instant.
"""

import inspect
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Train, resume, sample and evaluate class-conditional generative models "
                       "(a VAE, a small Transformer) on MNIST-family data with JAX, Flax, Optax "
                       "and Orbax; plot and list runs.")

WORKDIR_HELP = "Run folder: checkpoints, metrics.jsonl, config.toml, tb/ and PNGs."
DEFAULT_WORKDIR = Path("checkpoints/vae")
DEVICES_HELP = ("Train data-parallel on this many devices, the batch split between them "
                "[default: all JAX devices; a CPU is one unless XLA_FLAGS="
                "--xla_force_host_platform_device_count=N].")
PEAK_HELP = ("The device's peak GFLOP/s, to report model FLOP utilisation in %; 'auto' "
             "measures a float32 matmul once and caches it.")
STEP_HELP = "Checkpoint step, or 'best' (lowest test loss) [default: latest]."


def option(name, annotation, default, *decls, **kwargs):
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, *decls, **kwargs))


def check_positive(flag, value):
    if value is not None and value <= 0:
        raise ValueError(f"{flag} must be a positive integer, got {value}")


def parse_profile_steps(text: Optional[str]):
    if text is None:
        return None
    try:
        first, last = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"--profile-steps takes A:B (steps A to B, e.g. 10:20), got "
                         f"{text!r}") from None
    return first, last


def check_peak(text: Optional[str]):
    """--peak-gflops: a positive number, or "auto" (measured once, cached)."""
    if text is None or text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"--peak-gflops takes a positive number or 'auto', got {text!r}")
    return value


def parse_step(text: Optional[str]):
    if text is None or text == "best":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--step takes a step number or 'best', got {text!r}") from None


def start_jax(devices_env=True):
    from jaxtrain.training.engine.parallel import initialize_distributed
    from jaxtrain.training.host.cache import use_compilation_cache
    from jaxtrain.training.host.memory import tune_host

    tune_host()
    use_compilation_cache()
    if devices_env:
        initialize_distributed()
