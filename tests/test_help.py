"""The help a person scans: `fit -h` in panels, choices shown, each default once, one
on/off style, examples; -h on every command; --version. In-process, no JAX: fast."""

import re
from pathlib import Path

import pytest

from jaxtrain.cli.app import PANELS
from jaxtrain.cli.main import app

COMMANDS = [c.name or c.callback.__name__.rstrip("_") for c in app.registered_commands]


def entries(help_text: str) -> dict:
    """{first flag: its whole help entry} of a command's help."""
    out, flag = {}, None
    for line in help_text.splitlines():
        m = re.match(r"  (-h, )?(--[a-z-]+)", line)
        if m:
            flag = m.group(2)
            out[flag] = line
        elif flag and line.startswith("    "):
            out[flag] += " " + line.strip()
        else:
            flag = None
    return out


def test_fit_help_is_in_panels_in_order(jaxtrain):
    text = jaxtrain("fit", "-h", check=True).stdout
    headings = [line[:-1] for line in text.splitlines() if re.fullmatch(r"[A-Z][a-z-]+:", line)]
    assert headings == [*PANELS, "Options"]
    panel_of = {}
    for line in text.splitlines():
        if line[:-1] in PANELS:
            panel = line[:-1]
        m = re.match(r"  (--[a-z-]+)", line)
        if m:
            panel_of[m.group(1)] = panel
    assert panel_of["--model"] == panel_of["--workdir"] == "Run"
    assert panel_of["--data-dir"] == "Data" and panel_of["--latent-dim"] == "Model"
    assert panel_of["--lr"] == "Optimisation" and panel_of["--eval-every"] == "Evaluation"
    assert panel_of["--freeze"] == "Fine-tuning" and panel_of["--tensorboard"] == "Output"
    assert "Examples:" in text and "jaxtrain fit --preset baby-gpt --data-file" in text


def test_choices_shown_and_each_default_once_in_one_style(jaxtrain):
    help_ = entries(jaxtrain("fit", "--help", check=True).stdout)
    assert "--model [vae|transformer]" in help_["--model"]
    assert "[mnist|fashion-mnist|digits|folder|text]" in help_["--dataset"]
    assert "--precision [float32|bf16]" in help_["--precision"]
    for flag, entry in help_.items():
        assert entry.count("[default:") <= 1, entry
        assert "<str>" not in entry or flag not in ("--model", "--dataset", "--precision")
    assert "[default: one epoch; text 250]" in help_["--eval-every"]
    assert "[default: a tenth of the run's steps; transformer 200]" in help_["--warmup-steps"]
    for flag in ("--tensorboard", "--download", "--binarize"):  # booleans: on/off
        assert re.search(r"\[default: (on|off)\]", help_[flag]), help_[flag]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_dash_h(command, jaxtrain):
    proc = jaxtrain(command, "-h")
    assert proc.returncode == 0 and proc.stdout.startswith("Usage:"), proc.stderr
    for entry in entries(proc.stdout).values():  # booleans show on/off, never true/false
        assert not re.search(r"\[default: (true|false|tensorboard)\]", entry), entry


def test_version_is_pyproject_s(jaxtrain):
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    expected = re.search(r'^version = "(.+)"', pyproject.read_text(), re.M).group(1)
    proc = jaxtrain("--version", check=True)
    assert proc.stdout.strip() == f"jaxtrain {expected}"
