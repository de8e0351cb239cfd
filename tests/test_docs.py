"""The docs cannot drift from the code: the generated reference pages are what
docs/generate.py writes now, every `jaxtrain ...` line in a code block of README.md and
docs/ parses and validates against the real command line, and the site builds with
`mkdocs build --strict`.

A command line in the docs may use placeholders, `<name>` (e.g. `--workdir <workdir>`):
the flag must exist, and its value stands for any valid one. Paths need not exist here:
a missing `--config` file or `--init-from` run is read as empty, so the flags and values
are checked, not this machine's files.
"""

import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer.main

from jaxtrain.cli import export, judge, train, view
from jaxtrain.cli.main import app
from jaxtrain.training.settings import files

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# The commands that only parse their options before they start JAX; the others (plot,
# runs, presets) would read this machine's runs, so only their parsing is checked.
VALIDATED = {"fit": train, "resume": train, "sample": view, "eval": view, "judge": judge,
             "export": export}
SHELL_ENDS = {">", ">>", "|", "&", "&&", ";", "2>&1"}


def generator():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def command_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, arguments after `jaxtrain`) of each jaxtrain command in a code block,
    continuation lines joined, comments and environment assignments left out."""
    out, fence, pending = [], None, None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence else stripped
            continue
        if not fence:
            continue
        if pending is not None:
            start, text = pending
            line = text + " " + line
        else:
            start = number
        if line.rstrip().endswith("\\"):
            pending = (start, line.rstrip()[:-1])
            continue
        pending = None
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words.pop(0)
        if not words or Path(words[0]).name != "jaxtrain":
            continue
        args = []
        for word in words[1:]:
            if word in SHELL_ENDS:
                break
            args.append(word)
        out.append((start, args))
    return out


class Parsed(Exception):
    """The command got past its validation to where it would start JAX."""


def _placeholder(param) -> str:
    return {"int": "1", "float": "1.0"}.get(param.bare_type(), "placeholder")


def check(args: list[str]) -> None:
    """Raises if `jaxtrain ARGS` names an unknown command or flag or a value the command
    line refuses; runs nothing."""
    group = typer.main.get_command(app)
    if args == ["--help"]:
        return
    if not args or args[0] not in group.commands:
        raise ValueError(f"no command {args[:1]}: the commands are {', '.join(group.commands)}")
    name, command = args[0], group.commands[args[0]]
    if "--help" in args or "-h" in args:
        return
    options = {opt: p for p in command.params for opt in [*p.opts, *p.secondary_opts]}
    values, positional = [], [p for p in command.params if p.param_type_name == "argument"]
    for previous, word in zip([None, *args[1:]], args[1:]):
        if re.fullmatch(r"<[^<>]+>", word):
            param = options.get(previous) or (positional[0] if positional else None)
            word = _placeholder(param) if param is not None else word
        values.append(word)
    ctx = command.make_context(name, values)  # click: unknown options, types, choices
    if name not in VALIDATED:
        return
    read_file, source_architecture = files.read_file, train.source_architecture

    def read_if_there(path):
        return read_file(path) if Path(path).exists() else files.Layer(str(path), {})

    def source_if_there(workdir):
        if (Path(workdir) / "config.toml").is_file():
            return source_architecture(workdir)
        return files.Layer(str(workdir), {})

    def stop(*_, **__):
        raise Parsed

    module = VALIDATED[name]
    patches = [(files, "read_file", read_if_there), (train, "source_architecture",
               source_if_there), (module, "start_jax", stop)]
    with contextlib.ExitStack() as stack:
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        for target, attr, value in patches:
            mp.setattr(target, attr, value)
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        with contextlib.suppress(Parsed):
            ctx.invoke(command.callback, **ctx.params)  # the command's own validation


def test_the_reference_pages_are_what_the_code_writes():
    stale = generator().stale()
    assert not stale, (f"stale reference pages (docs/reference/{', '.join(stale)}): run "
                       "`python docs/generate.py` (or `make docs`) and commit them")


def test_every_command_line_in_the_docs_parses():
    seen, wrong = 0, []
    for path in DOCS:
        for number, args in command_lines(path):
            seen += 1
            try:
                check(args)
            except Exception as e:  # click's errors, SettingError, ConfigError, ValueError
                message = e.format_message() if hasattr(e, "format_message") else str(e)
                wrong.append(f"{path.relative_to(ROOT)}:{number}: jaxtrain "
                             f"{shlex.join(args)}\n    {message}")
    assert seen > 40, f"only {seen} command lines found: is the extraction broken?"
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("line", [
    "jaxtrain fitt --epochs 1",  # no such command
    "jaxtrain fit --epoch 1",  # no such flag
    "jaxtrain fit --lr -0.5",  # out of bounds
    "jaxtrain fit --activation tanh",  # not a choice
    "jaxtrain fit --epochs 1 --steps 10",  # exactly one length
    "jaxtrain fit --model transformer --latent-dim 8",  # another family's setting
    "jaxtrain fit --preset baby-gpt",  # text needs --data-file
    "jaxtrain sample --class 7 --top-k 0",  # the command's own check
    "jaxtrain sample --class 7 --top-p 1.5",
    "jaxtrain eval --step newest",
    "jaxtrain resume --epochs x",  # not an integer
])
def test_the_checker_refuses_a_bad_line(tmp_path, line):
    doc = tmp_path / "page.md"
    doc.write_text(f"```sh\n{line}   # a comment\n```\n")
    [(_, args)] = command_lines(doc)
    with pytest.raises(Exception):
        check(args)


def test_the_checker_reads_placeholders_continuations_and_shell(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text("```sh\nXLA_FLAGS=--x=2 .venv/bin/jaxtrain fit --workdir <workdir> \\\n"
                   "    --lr <lr> --config missing.toml > out.txt &\n"
                   "echo jaxtrain fit --bogus\n```\njaxtrain fit --bogus (prose)\n")
    [(number, args)] = command_lines(doc)
    assert number == 2 and args[-1] == "missing.toml"
    check(args)


def test_the_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "make test" in text and "make demo" in text  # CI's .ci/run runs `make test`
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert targets and not missing, f"README.md links to missing files: {missing}"


def build_site(root: Path, site: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of the site in `root` (not --quiet: it would hide the
    warnings that --strict turns into a failure)."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "--site-dir", str(site)], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_the_site_builds_strict(tmp_path):
    started = time.perf_counter()
    proc = build_site(ROOT, tmp_path / "site")
    assert proc.returncode == 0, (
        f"`mkdocs build --strict` failed (mkdocs and mkdocs-material come with `make "
        f"install`, the [docs] extra):\n{proc.stdout}{proc.stderr}")
    assert (tmp_path / "site" / "reference" / "settings" / "index.html").is_file()
    print(f"mkdocs build --strict: {time.perf_counter() - started:.1f} s")


def test_the_strict_build_refuses_a_broken_anchor(tmp_path):
    for path in ("mkdocs.yml", "CHANGELOG.md"):
        shutil.copy(ROOT / path, tmp_path / path)
    for folder in ("docs", "benchmarks/results"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    with open(tmp_path / "docs" / "index.md", "a") as f:
        f.write("\n[a link](training.md#no-such-section)\n")
    proc = build_site(tmp_path, tmp_path / "site")
    assert proc.returncode != 0 and "no-such-section" in proc.stdout + proc.stderr
