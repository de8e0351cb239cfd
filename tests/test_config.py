"""Settings: one source of truth, layers (defaults < preset < file < flags), TOML files
and their errors. In-process and JAX-free, so these run in seconds."""

import dataclasses

import pytest

from jaxtrain.cli.options import config_fields
from jaxtrain.models.fields import SettingError, user_fields
from jaxtrain.training.settings.config import MODELS, TrainConfig
from jaxtrain.training.settings.files import (
    ConfigError,
    Layer,
    presets,
    read_file,
    read_preset,
    resolve,
    to_toml,
)


def one_line_error(proc, *fragments):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), \
        proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_every_setting_has_one_flag_and_the_help_shows_its_default(jaxtrain):
    fields = config_fields()
    for cls in MODELS.values():
        assert {f.name for f in user_fields(cls)} <= fields.keys()
    assert {f.name for f in user_fields(TrainConfig)} <= fields.keys()
    help_text = " ".join(jaxtrain("fit", "--help").stdout.split())
    for name in fields:
        assert f"--{name.replace('_', '-')}" in help_text, name
    assert "--ema-decay FLOAT" in help_text or "--ema-decay <float>" in help_text
    assert "[default: 0.998]" in help_text  # read from TrainConfig.ema_decay
    assert "[default: vae 128, transformer 32]" in help_text  # FAMILY_DEFAULTS


def test_precedence_defaults_then_file_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('model = "vae"\n[train]\nlr = 0.01\nseed = 3\n[model_config]\n'
                    "latent_dim = 8\n")
    config, workdir = resolve([read_file(path), Layer("flag", {"train": {"seed": 5}})])
    assert config.train.lr == 0.01  # the file over the default 4e-3
    assert config.train.seed == 5  # the flag over the file
    assert config.model_config.latent_dim == 8
    assert config.train.batch_size == 128 and workdir is None  # defaults fill the rest
    # A file asking for steps clears the default epochs; a flag asking for epochs wins.
    path.write_text("[train]\nsteps = 40\n")
    assert resolve([read_file(path)])[0].train.epochs is None
    config = resolve([read_file(path), Layer("flag", {"train": {"epochs": 2}})])[0]
    assert (config.train.epochs, config.train.steps) == (2, None)


def test_family_defaults_apply_below_the_file(tmp_path):
    config = resolve([Layer("flag", {"model": "transformer"})])[0]
    assert (config.train.batch_size, config.train.lr) == (32, 1e-3)
    text = resolve([Layer("flag", {"model": "transformer",
                                   "data": {"dataset": "text", "data_file": "/x.txt"}})])[0]
    assert (text.train.steps, text.train.epochs, text.model_config.context) == (2000, None, 256)


def test_print_config_round_trip(tmp_path, jaxtrain):
    first = jaxtrain("fit", "--model", "transformer", "--layers", 2, "--lr", "3e-4",
                     "--epochs", 4, "--workdir", tmp_path / "w", "--print-config")
    assert first.returncode == 0 and not (tmp_path / "w").exists()  # no workdir touched
    path = tmp_path / "run.toml"
    path.write_text(first.stdout)
    again = jaxtrain("fit", "--config", path, "--print-config")
    assert again.stdout == first.stdout
    a, wa = resolve([read_file(path)])
    assert a.model_config.layers == 2 and a.train.lr == 3e-4 and wa == str(tmp_path / "w")
    # The same RunConfig as the flags give, down to every field.
    b, _ = resolve([Layer("flag", {"model": "transformer", "model_config": {"layers": 2},
                                   "train": {"lr": 3e-4, "epochs": 4}})])
    assert a == b
    # Flags still override the file, and --workdir replaces the file's workdir.
    over = jaxtrain("fit", "--config", path, "--seed", 7, "--workdir", tmp_path / "again",
                    "--print-config")
    assert "seed = 7" in over.stdout and f'workdir = "{tmp_path / "again"}"' in over.stdout


def test_a_run_config_survives_toml(tmp_path):
    config = resolve([read_preset("baby-gpt"),
                      Layer("flag", {"data": {"data_file": str(tmp_path / "t.txt")}})])[0]
    path = tmp_path / "c.toml"
    path.write_text(to_toml(config))
    assert resolve([read_file(path)])[0] == config


def test_presets_are_listed_and_load(jaxtrain):
    shipped = presets()
    assert {"baby-gpt", "vae-mnist", "digits"} <= shipped.keys()
    listing = jaxtrain("presets").stdout
    for name, (description, _) in shipped.items():
        assert name in listing and description in listing and len(description) > 20
        layer = read_preset(name)
        if name != "baby-gpt":
            resolve([layer])  # each preset is a valid config on its own
    gpt = resolve([read_preset("baby-gpt"), Layer("flag", {"data": {"data_file": "/t.txt"}})])[0]
    c = gpt.model_config
    assert (c.layers, c.d_model, c.heads, c.context, c.dropout) == (4, 128, 4, 64, 0.0)
    assert (gpt.train.steps, gpt.train.batch_size) == (2000, 12)
    one_line_error(jaxtrain("fit", "--preset", "nope", "--print-config"), "nope", "baby-gpt")


@pytest.mark.parametrize("text, fragments", [
    ("[train\nlr = 1", ["not valid TOML", "line 1"]),
    ("[train]\nlearning_rate = 0.1\n", ["[train] learning_rate", "unknown key", "lr"]),
    ("[training]\nlr = 0.1\n", ["training", "unknown section", "[train]"]),
    ("[train]\nlr = -0.5\n", ["[train] lr = -0.5", "must be > 0", "--lr"]),
    ("[train]\nbatch_size = 'big'\n", ["[train] batch_size", "integer"]),
    ("[train]\nema_decay = nan\n", ["[train] ema_decay", "finite"]),
    ("[train]\nlr = inf\n", ["[train] lr", "finite"]),
    ("[data]\ndataset = 'cifar'\n", ["[data] dataset", "cifar", "mnist"]),
    ('model = "transformer"\n[model_config]\nlatent_dim = 3\n',
     ["[model_config] latent_dim", "vae option"]),
    ("[model_config]\nencoder_widths = [512, -1]\n", ["encoder_widths", "positive integers"]),
])
def test_a_bad_file_is_one_line_naming_the_file_and_key(tmp_path, jaxtrain, text, fragments):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    one_line_error(jaxtrain("fit", "--config", path, "--print-config"), str(path), *fragments)


def test_config_file_errors_without_a_file(tmp_path, jaxtrain):
    one_line_error(jaxtrain("fit", "--config", tmp_path / "none.toml"), "does not exist",
                   "--print-config")
    with pytest.raises(ConfigError, match="cannot be read"):
        read_file(tmp_path)


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "inf"),
                                         ("--grad-clip", "nan"), ("--weight-decay", "-inf"),
                                         ("--ema-decay", "1.0"), ("--kl-weight", "nan")])
def test_float_flags_reject_nan_infinity_and_out_of_range(jaxtrain, flag, value):
    one_line_error(jaxtrain("fit", flag, value, "--print-config"), flag)


def test_setting_errors_name_the_setting():
    with pytest.raises(SettingError, match="--warmup-steps must be >= 0"):
        TrainConfig(warmup_steps=-1)
    with pytest.raises(SettingError, match="exactly one of --epochs and --steps"):
        TrainConfig(epochs=2, steps=3)
    assert dataclasses.replace(TrainConfig(), lr=1.0).lr == 1.0
    with pytest.raises(SettingError, match="--model must be one of vae, transformer"):
        resolve([Layer("flag", {"model": "gan"})])


def test_a_family_warmup_shrinks_to_a_short_run_and_a_given_one_is_checked_early(jaxtrain):
    def warmup(**train):
        return resolve([Layer("flag", {"model": "transformer", "train": train})])[0] \
            .train.warmup_steps

    assert warmup(steps=20) == 2  # the family's 200 is at most a tenth of the run
    assert warmup(steps=5000) == 200 and warmup(epochs=1) == 200
    assert warmup(steps=20, warmup_steps=0) == 0  # a value given stays as given
    # A given value too large is refused at once, before JAX starts.
    proc = jaxtrain("fit", "--model", "transformer", "--steps", 20, "--warmup-steps", 200)
    one_line_error(proc, "--warmup-steps 200 must be smaller than the run's 20 steps")
