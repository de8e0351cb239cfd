"""The Typer app and what its commands share: option helpers and small validators.

No JAX here: heavy imports happen inside the commands, so `--help` is instant.
"""

import inspect
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperCommand

# Plain-text help (rich would cost 0.1 s of every `--help` and draw boxes that grep and
# narrow terminals mangle); PanelCommand groups a command's options under headings.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]},
                  help="Train, resume, sample and evaluate class-conditional generative models "
                       "(a VAE, a small Transformer) on MNIST-family images, your own image "
                       "folders or a text file, with JAX, Flax, Optax and Orbax; plot and list "
                       "runs. `jaxtrain COMMAND -h` describes a command.")

# The order of the help's panels; options without one come last, under "Options".
PANELS = ("Run", "Data", "Model", "Optimisation", "Evaluation", "Fine-tuning", "Output")


class PanelCommand(TyperCommand):
    """A command whose help lists its options in panels (an option's rich_help_panel),
    as plain text."""

    def format_options(self, ctx, formatter):
        groups = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                panel = "Arguments" if param.param_type_name == "argument" else \
                    getattr(param, "rich_help_panel", None) or "Options"
                groups.setdefault(panel, []).append(record)
        # One column of option names for all panels (click measures each list alone):
        # the widest name that fits (click puts a longer one on a line of its own).
        width = min(30, max((len(term) for rows in groups.values() for term, _ in rows),
                            default=0))
        order = ["Arguments", *PANELS, *sorted(set(groups) - set(PANELS) - {"Arguments"})]
        for panel in sorted(groups, key=order.index):
            rows = groups[panel]
            i = max(range(len(rows)), key=lambda i: len(rows[i][0]) if len(rows[i][0]) <= 30
                    else -1)
            rows[i] = (rows[i][0].ljust(width), rows[i][1])
            with formatter.section(panel):
                formatter.write_dl(rows, col_max=30)


def version() -> str:
    """The installed jaxtrain's version (pyproject.toml's, through the package metadata)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("jaxtrain")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed: pip install -e .)"


def _print_version(value: bool):
    if value:
        print(f"jaxtrain {version()}")
        raise typer.Exit()


@app.callback()
def _root(show_version: bool = typer.Option(False, "--version", is_eager=True,
                                            callback=_print_version,
                                            help="Print jaxtrain's version and exit.")):
    # The app's help is Typer(help=...) above; this callback only adds --version.
    pass


WORKDIR_HELP = "Run folder: checkpoints, metrics.jsonl, config.toml, tb/ and PNGs."
DEFAULT_WORKDIR = Path("checkpoints/vae")
DEVICES_HELP = ("Train data-parallel on this many devices, the batch split between them "
                "[default: all JAX devices; a CPU is one unless XLA_FLAGS="
                "--xla_force_host_platform_device_count=N].")
PEAK_HELP = ("The device's peak GFLOP/s, to report model FLOP utilisation in %; 'auto' "
             "measures a float32 matmul once and caches it.")
STEP_HELP = "Checkpoint step, 'latest' or 'best' (lowest test loss). [default: latest]"


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
    """--step: None (the latest) for 'latest', 'best', or a step number."""
    if text is None or text == "latest":
        return None
    if text == "best":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--step takes a step number, 'latest' or 'best', got "
                         f"{text!r}") from None


def start_jax(devices_env=True):
    from jaxtrain.training.engine.parallel import initialize_distributed
    from jaxtrain.training.host.cache import use_compilation_cache
    from jaxtrain.training.host.workarounds import tune_host

    tune_host()
    use_compilation_cache()
    if devices_env:
        initialize_distributed()
