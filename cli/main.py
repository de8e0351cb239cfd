"""The `jaxtrain` command line: options in, a validated config out, a command called.

`fit`'s settings are generated from the config dataclasses (cli/options.py). JAX, torch
and the trainer are imported inside the commands, so `--help` is instant. Every user
error ends as one line on stderr and a non-zero exit code, without a traceback.
"""

import inspect
import sys
from pathlib import Path
from typing import List, Optional

import typer

from jaxtrain.cli.options import parse_flags, with_signature

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
STEP_HELP = "Checkpoint step, or 'best' (lowest test loss) [default: latest]."


def _option(name, annotation, default, *decls, **kwargs):
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, *decls, **kwargs))


def _positive(flag, value):
    if value is not None and value <= 0:
        raise ValueError(f"{flag} must be a positive integer, got {value}")


def _profile_steps(text: Optional[str]):
    if text is None:
        return None
    try:
        first, last = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"--profile-steps takes A:B (steps A to B, e.g. 10:20), got "
                         f"{text!r}") from None
    return first, last


def _peak(value: Optional[float]):
    if value is not None and not 0 < value < float("inf"):
        raise ValueError(f"--peak-gflops must be a positive number, got {value}")
    return value


def _step(text: Optional[str]):
    if text is None or text == "best":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--step takes a step number or 'best', got {text!r}") from None


def _start(devices_env=True):
    from jaxtrain.training.commands import use_compilation_cache
    from jaxtrain.training.parallel import initialize_distributed

    use_compilation_cache()
    if devices_env:
        initialize_distributed()


COMMAND_OPTIONS = [
    _option("model", Optional[str], None, "--model",
            help="Model family: vae or transformer [default: vae]."),
    _option("workdir", Optional[Path], None, "--workdir",
            help=WORKDIR_HELP + " [default: checkpoints/<model>]"),
    _option("config", Optional[Path], None, "--config",
            help="A TOML file of settings (see --print-config); flags override it."),
    _option("preset", Optional[str], None, "--preset",
            help="Start from a shipped preset (`jaxtrain presets` lists them); --config and "
                 "flags override it."),
    _option("print_config", bool, False, "--print-config",
            help="Print the resolved config as TOML and exit, without training."),
    _option("overwrite", bool, False, "--overwrite", help="Replace a run already in the workdir."),
    _option("stop_at_epoch", Optional[int], None, "--stop-at-epoch",
            help="Stop after this epoch, leaving the run resumable (e.g. for a time-limited "
                 "job)."),
    _option("devices", Optional[int], None, "--devices", help=DEVICES_HELP),
    _option("profile_steps", Optional[str], None, "--profile-steps",
            help="Write a jax.profiler trace of steps A to B (A:B) into <workdir>/profile/."),
    _option("peak_gflops", Optional[float], None, "--peak-gflops",
            help="The device's peak GFLOP/s, to report model FLOP utilisation in %."),
    _option("tensorboard", bool, True, "--tensorboard/--no-tensorboard",
            help="Write TensorBoard event files into <workdir>/tb/."),
]


def fit(**options):
    """Train a new run. Settings: defaults < --preset < --config FILE < flags."""
    from jaxtrain.training.config_file import Layer, read_file, read_preset, resolve, to_toml

    _positive("--stop-at-epoch", options["stop_at_epoch"])
    layers = []
    if options["preset"]:
        layers.append(read_preset(options["preset"]))
    if options["config"]:
        layers.append(read_file(options["config"]))
    flags = parse_flags(options)
    for key in ("model", "workdir"):
        if options[key] is not None:
            flags[key] = str(options[key])
    layers.append(Layer("flag", flags))
    config, workdir = resolve(layers)
    workdir = Path(workdir) if workdir else Path("checkpoints") / config.model
    if options["print_config"]:
        print(to_toml(config, workdir), end="")
        return
    _start()
    from jaxtrain.training import commands

    extras = commands.Extras(options["stop_at_epoch"], options["devices"],
                             _profile_steps(options["profile_steps"]),
                             _peak(options["peak_gflops"]), options["tensorboard"])
    commands.fit(config, workdir, overwrite=options["overwrite"], extras=extras)
    _done(workdir)


app.command(context_settings={"help_option_names": ["--help", "-h"]})(
    with_signature(fit, COMMAND_OPTIONS))


def _done(workdir: Path):
    print(f"done: checkpoints in {workdir / 'checkpoints'}, metrics in "
          f"{workdir / 'metrics.jsonl'}, curves in {workdir / 'curves.png'}; "
          f"`tensorboard --logdir {workdir}` shows the run", file=sys.stderr)


@app.command()
def resume(
    workdir: Path = typer.Option(DEFAULT_WORKDIR, help=WORKDIR_HELP),
    epochs: Optional[int] = typer.Option(
        None, help="Raise the run's total epochs (the LR schedule is rebuilt for the new total)."),
    steps: Optional[int] = typer.Option(
        None, help="Raise the total steps of a run measured in steps (text)."),
    stop_at_epoch: Optional[int] = typer.Option(None, help="Stop after this epoch, resumable."),
    lr: Optional[float] = typer.Option(
        None, help="A new peak learning rate (e.g. after the run diverged)."),
    grad_clip: Optional[float] = typer.Option(None, help="A new gradient-norm clip."),
    patience: Optional[int] = typer.Option(
        None, help="A new early-stopping patience (0: never stop early)."),
    data_dir: Optional[Path] = typer.Option(None, help="Read the data from here instead of the "
                                                       "folder saved with the run."),
    data_file: Optional[Path] = typer.Option(None, help="text: read this file instead of the "
                                                        "one saved with the run."),
    devices: Optional[int] = typer.Option(None, help=DEVICES_HELP),
    profile_steps: Optional[str] = typer.Option(
        None, help="Write a jax.profiler trace of steps A to B (A:B) into <workdir>/profile/."),
    peak_gflops: Optional[float] = typer.Option(
        None, help="The device's peak GFLOP/s, to report model FLOP utilisation in %."),
    tensorboard: bool = typer.Option(True, help="Write TensorBoard event files into "
                                                "<workdir>/tb/."),
):
    """Continue a run from its latest checkpoint, with its saved settings."""
    for flag, value in (("--epochs", epochs), ("--steps", steps),
                        ("--stop-at-epoch", stop_at_epoch)):
        _positive(flag, value)
    _start()
    from jaxtrain.training import commands

    extras = commands.Extras(stop_at_epoch, devices, _profile_steps(profile_steps),
                             _peak(peak_gflops), tensorboard)
    overrides = {"epochs": epochs, "steps": steps, "lr": lr, "grad_clip": grad_clip,
                 "patience": patience}
    commands.resume(workdir, overrides, data_dir=data_dir and data_dir.absolute(),
                    data_file=data_file and data_file.absolute(), extras=extras)
    _done(workdir)


@app.command()
def sample(
    label: Optional[str] = typer.Option(
        None, "--class", help="Digits: class to generate, 0-9, or 'all' for one row per class."),
    prompt: Optional[str] = typer.Option(
        None, help="Text: the text to continue; the result is printed."),
    length: int = typer.Option(500, help="Text: characters to generate."),
    num: int = typer.Option(64, help="Number of images (with 'all': spread over the rows)."),
    workdir: Path = typer.Option(DEFAULT_WORKDIR, help=WORKDIR_HELP),
    out: Optional[Path] = typer.Option(None, help="PNG to write [default: "
                                                  "<workdir>/sample_class_<class>.png]."),
    seed: int = typer.Option(0, help="Seed of the sampling."),
    step: Optional[str] = typer.Option(None, help=STEP_HELP),
    temperature: Optional[float] = typer.Option(
        None, help="transformer: softmax temperature; 0 is greedy [default: 1]."),
    top_k: Optional[int] = typer.Option(
        None, help="transformer: sample among the k likeliest tokens [default: all]."),
):
    """Generate from the EMA parameters: a PNG grid of one class (digits), or text."""
    if temperature is not None and not 0 <= temperature < float("inf"):
        raise ValueError(f"--temperature must be a number >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k must be a positive integer, got {top_k}")
    if (label is None) == (prompt is None):
        raise ValueError("pass --class N (a digits model) or --prompt TEXT (a text model)")
    step = _step(step)
    if prompt is not None:
        _positive("--length", length)
    elif label != "all":
        try:
            label = int(label)
        except ValueError:
            raise ValueError(f"--class takes a class number (0-9) or 'all', got {label!r}")
    _positive("--num", num)
    _start(devices_env=False)
    from jaxtrain.training import commands

    result = commands.sample(workdir, prompt if prompt is not None else label, num, out=out,
                             seed=seed, step=step, length=length, temperature=temperature,
                             top_k=top_k)
    print(result if prompt is not None else f"wrote {result}")


@app.command("eval")
def eval_(
    workdir: Path = typer.Option(DEFAULT_WORKDIR, help=WORKDIR_HELP),
    step: Optional[str] = typer.Option(None, help=STEP_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    data_dir: Optional[Path] = typer.Option(None, help="Read the data from here instead of the "
                                                       "folder saved with the run."),
    data_file: Optional[Path] = typer.Option(None, help="text: read this file instead of the "
                                                        "one saved with the run."),
):
    """Print the test metrics of a checkpoint, computed with the EMA parameters."""
    import json

    step = _step(step)
    _start(devices_env=False)
    from jaxtrain.training import commands
    from jaxtrain.training.run import describe

    m = commands.eval_checkpoint(workdir, step=step, data_dir=data_dir and data_dir.absolute(),
                                 data_file=data_file and data_file.absolute())
    if as_json:
        print(json.dumps(m))
    else:
        where = f"step {m.pop('step')}" + (f" (epoch {m.pop('epoch')})" if "epoch" in m else "")
        unit = "character" if m["dataset"] == "text" else "image"
        print(f"{m.pop('model')} on {m.pop('dataset')} ({m.pop('test_examples')} test "
              f"{'windows' if unit == 'character' else 'images'}), {where}: "
              f"{describe(m)}; losses in nats per {unit}")


@app.command()
def plot(
    workdirs: List[Path] = typer.Argument(..., help="Run folders to draw, one line each."),
    out: Optional[Path] = typer.Option(None, help="PNG to write [default: <first "
                                                  "workdir>/curves.png]."),
    metric: Optional[str] = typer.Option(
        None, help="Plot this metrics.jsonl key instead of train and test loss "
                   "(e.g. test_loss, test_kl, samples_per_s)."),
):
    """Draw train and test loss against step for one or more runs into a PNG."""
    from jaxtrain.training.plot import plot_runs

    for w in workdirs:
        if not (w / "metrics.jsonl").exists():
            raise ValueError(f"{w} has no metrics.jsonl: pass the workdir of a run that has "
                             "evaluated at least once")
    print(f"wrote {plot_runs(workdirs, out or workdirs[0] / 'curves.png', metric)}")


@app.command()
def runs(
    folder: Path = typer.Argument(Path("checkpoints"), help="Where to look for runs."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list, for scripts."),
):
    """List the runs below a folder: model, data, progress, best and latest test loss."""
    import json

    from jaxtrain.training.runs import find_runs, format_table

    rows = find_runs(folder)
    if as_json:
        print(json.dumps(rows))
    elif not rows:
        print(f"no runs below {folder}", file=sys.stderr)
    else:
        print(format_table(rows))


@app.command()
def presets():
    """List the presets that `jaxtrain fit --preset NAME` starts from."""
    from jaxtrain.training.config_file import presets as shipped

    for name, (description, _) in shipped().items():
        print(f"{name:12s} {description}")


def main():
    """Entry point: runs the app and turns user errors into one line on stderr."""
    from jaxtrain.training.errors import Diverged, Interrupted

    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except (Interrupted, Diverged) as e:
        print(str(e) if isinstance(e, Interrupted) else f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (ValueError, OSError) as e:  # boundary errors name the value and the fix
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"error: {first_line}", file=sys.stderr)
        sys.exit(2 if isinstance(e, ValueError) else 1)
    except Exception as e:
        # Typer's (vendored) click errors: unknown option, bad choice, not a number...
        if not hasattr(e, "format_message") or not hasattr(e, "exit_code"):
            raise
        if type(e).__name__ == "NoArgsIsHelpError":  # its message is the help text
            print(e.format_message())
            sys.exit(0)
        ctx = getattr(e, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"error: {e.format_message()}{where}", file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
