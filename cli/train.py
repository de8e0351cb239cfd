"""`jaxtrain fit` and `jaxtrain resume`: the commands that write a workdir.

`fit`'s settings are generated from the config dataclasses (cli/options.py).
"""

import sys
from pathlib import Path
from typing import Optional

import typer

from jaxtrain.cli.app import (
    DEFAULT_WORKDIR,
    DEVICES_HELP,
    PEAK_HELP,
    WORKDIR_HELP,
    PanelCommand,
    app,
    check_peak,
    check_positive,
    option,
    parse_profile_steps,
    start_jax,
)
from jaxtrain.cli.options import choices_metavar, on_off, parse_flags, with_signature
from jaxtrain.training.settings.config import DEFAULT_MODEL, MODELS

COMMAND_OPTIONS = [
    option("model", Optional[str], None, "--model", metavar=choices_metavar(MODELS),
           help=f"Model family. [default: {DEFAULT_MODEL}]", rich_help_panel="Run"),
    option("workdir", Optional[Path], None, "--workdir", rich_help_panel="Run",
           help=WORKDIR_HELP + " [default: checkpoints/<model>]"),
    option("config", Optional[Path], None, "--config", rich_help_panel="Run",
           help="A TOML file of settings (see --print-config); flags override it."),
    option("preset", Optional[str], None, "--preset", rich_help_panel="Run",
           help="Start from a shipped preset (`jaxtrain presets` lists them); --config and "
                "flags override it."),
    option("print_config", bool, False, "--print-config", rich_help_panel="Run",
           help="Print the resolved config as TOML and exit, without training."),
    option("list_params", bool, False, "--list-params", rich_help_panel="Run",
           help="Print the parameter paths, shapes and sizes, and which --freeze keeps "
                "fixed, then exit."),
    option("overwrite", bool, False, "--overwrite", rich_help_panel="Run",
           help="Replace a run already in the workdir."),
    option("stop_at_epoch", Optional[int], None, "--stop-at-epoch", rich_help_panel="Run",
           help="Stop after this epoch, leaving the run resumable (e.g. for a time-limited "
                "job)."),
    option("devices", Optional[int], None, "--devices", help=DEVICES_HELP,
           rich_help_panel="Run"),
    option("profile_steps", Optional[str], None, "--profile-steps", rich_help_panel="Output",
           help="Write a jax.profiler trace of steps A to B (A:B) into <workdir>/profile/."),
    option("peak_gflops", Optional[str], None, "--peak-gflops", help=PEAK_HELP,
           rich_help_panel="Output"),
    option("tensorboard", bool, True, "--tensorboard/--no-tensorboard", show_default=False,
           help=f"Write TensorBoard event files into <workdir>/tb/. {on_off(True)}",
           rich_help_panel="Output"),
]

# \b keeps the lines as written (click rewraps a paragraph otherwise).
FIT_EXAMPLES = """Examples:

\b
  jaxtrain fit --dataset fashion-mnist --epochs 2      the VAE on Fashion-MNIST
  jaxtrain fit --model transformer --steps 500         the digits Transformer, short
  jaxtrain fit --preset baby-gpt --data-file input.txt a character model of a text file
  jaxtrain fit --config run.toml --seed 1              a saved config (--print-config)
"""


TEXT_PLACEHOLDER = "PATH/TO/TEXT.txt"  # what --print-config shows for a text file not given


def fit(**options):
    """Train a new run. Settings: defaults < --preset < --config FILE < flags."""
    from jaxtrain.models.fields import SettingError
    from jaxtrain.training.settings.defaults import to_fit
    from jaxtrain.training.settings.files import (
        Layer,
        given,
        read_file,
        read_preset,
        resolve,
        to_toml,
    )

    check_positive("--stop-at-epoch", options["stop_at_epoch"])
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
    try:
        config, workdir = resolve(layers)
    except SettingError as e:
        if not (options["print_config"] and e.key == "data_file"):
            raise
        # A text preset or config printed alone: its text file is the user's to name.
        layers.insert(0, Layer("placeholder", {"data": {"data_file": TEXT_PLACEHOLDER}}))
        config, workdir = resolve(layers)
    if config.train.init_from:
        # A fine-tuned run takes the architecture of the run it starts from, unless a
        # layer above sets it (commands.fit then names what differs).
        base = source_architecture(config.train.init_from)
        if any("model" in layer.values for layer in layers) and \
                config.model != base.values.get("model"):
            raise ValueError(f"--model {config.model}: the run in {config.train.init_from} is "
                             f"a {base.values.get('model')}; fine-tuning keeps the architecture "
                             "of the run it starts from (leave --model out)")
        config, workdir = resolve([base, *layers])
    workdir = Path(workdir) if workdir else Path("checkpoints") / config.model
    if config.train.freeze and not config.train.init_from:
        print(f"warning: --freeze {','.join(config.train.freeze)} without --init-from keeps "
              "those parameters at their random initialisation", file=sys.stderr)
    if options["print_config"]:
        # Defaults still to be fitted to the data stay unset, so that the file trains
        # what this command would (training/settings/defaults.py).
        text = to_toml(config, workdir, unset=to_fit(config, given(layers)))
        if config.data.data_file == TEXT_PLACEHOLDER:
            text = text.replace(f'data_file = "{TEXT_PLACEHOLDER}"', f'data_file = '
                                f'"{TEXT_PLACEHOLDER}"  # your text file (or --data-file)')
        print(text, end="")
        return
    start_jax()
    from jaxtrain.training.commands import fit as commands

    if options["list_params"]:
        from jaxtrain.training.commands.prepare import list_params

        print(list_params(config))
        return
    extras = commands.Extras(options["stop_at_epoch"], options["devices"],
                             parse_profile_steps(options["profile_steps"]),
                             check_peak(options["peak_gflops"]), options["tensorboard"])
    commands.fit(config, workdir, overwrite=options["overwrite"], extras=extras,
                 given=given(layers))
    _done(workdir, options["tensorboard"], config.train)


def source_architecture(init_from):
    """The model and architecture of the run in `init_from`, as the lowest layer: from the
    config.toml every run writes (the architecture never changes in a run's life)."""
    from jaxtrain.training.settings.files import Layer, read_file

    path = Path(init_from) / "config.toml"
    if not path.is_file():
        raise ValueError(f"--init-from {init_from} holds no jaxtrain run ({path.name} is "
                         "missing): pass the --workdir of a run made by `jaxtrain fit`")
    from jaxtrain.models.configs import saved_fields
    from jaxtrain.models.fields import user_fields
    from jaxtrain.training.settings.config import MODELS

    values = read_file(path).values
    layer = {k: values[k] for k in ("model", "model_config") if k in values}
    if layer.get("model") in MODELS:  # settings a flag sets (not how blocks are laid out)
        cls = MODELS[layer["model"]]
        settable = {f.name for f in user_fields(cls)}
        layer["model_config"] = {k: v for k, v in saved_fields(
            cls, layer.get("model_config", {})).items() if k in settable}
    return Layer(f"the run in {init_from}", layer)


app.command(cls=PanelCommand, epilog=FIT_EXAMPLES)(with_signature(fit, COMMAND_OPTIONS))


def _done(workdir: Path, tensorboard: bool, train):
    curves = workdir / "curves.png"  # drawn once the run has two evaluations
    offline = train.wandb and train.wandb_mode == "offline"
    print(f"done: checkpoints in {workdir / 'checkpoints'}, metrics in "
          f"{workdir / 'metrics.jsonl'}"
          + (f", curves in {curves}" if curves.exists() else "")
          + (f"; `tensorboard --logdir {workdir}` shows the run" if tensorboard else "")
          + (f"; `wandb sync {workdir / 'wandb'}/offline-run-*` uploads it to W&B"
             if offline else ""),
          file=sys.stderr)


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
    val_file: Optional[Path] = typer.Option(
        None, help="text: where the run's --val-file is now, if it moved; a resumed run keeps "
                   "its validation text, so another is refused."),
    devices: Optional[int] = typer.Option(None, help=DEVICES_HELP),
    profile_steps: Optional[str] = typer.Option(
        None, help="Write a jax.profiler trace of steps A to B (A:B) into <workdir>/profile/."),
    peak_gflops: Optional[str] = typer.Option(None, help=PEAK_HELP),
    tensorboard: bool = typer.Option(True, show_default=False,
                                     help="Write TensorBoard event files into <workdir>/tb/. "
                                          + on_off(True)),
    wandb: Optional[bool] = typer.Option(
        None, "--wandb/--no-wandb", show_default=False,
        help="Log to Weights & Biases, continuing the run's W&B run, or stop logging there "
             "[default: as the run was started]"),
):
    """Continue a run from its latest checkpoint, with its saved settings."""
    for flag, value in (("--epochs", epochs), ("--steps", steps),
                        ("--stop-at-epoch", stop_at_epoch)):
        check_positive(flag, value)
    start_jax()
    from jaxtrain.training.commands import fit as commands

    extras = commands.Extras(stop_at_epoch, devices, parse_profile_steps(profile_steps),
                             check_peak(peak_gflops), tensorboard)
    overrides = {"epochs": epochs, "steps": steps, "lr": lr, "grad_clip": grad_clip,
                 "patience": patience, "wandb": wandb}
    run = commands.resume(workdir, overrides, data_dir=data_dir and data_dir.absolute(),
                          data_file=data_file and data_file.absolute(), extras=extras,
                          val_file=val_file and val_file.absolute())
    _done(workdir, tensorboard, run.config.train)
