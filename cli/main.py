"""The `jaxtrain` command line: options in, a validated config out, a command called.

The commands live in cli/train.py (fit, resume), cli/view.py (sample, eval, plot, runs,
presets), cli/judge.py (judge) and cli/export.py (export). Every user error ends as one
line on stderr and a non-zero exit code, without a traceback.
"""

import sys


def _app():
    """The Typer app with every command registered."""
    from jaxtrain.cli import export, judge, train, view  # noqa: F401 (registers the commands)
    from jaxtrain.cli.app import app

    return app


def __getattr__(name: str):
    """`from jaxtrain.cli.main import app`, imported when asked for: the console script
    (run) must start under jemalloc before the CLI imports anything heavy."""
    if name == "app":
        return _app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main():
    """Entry point: runs the app and turns user errors into one line on stderr."""
    import typer

    from jaxtrain.training.errors import Diverged, Interrupted
    from jaxtrain.training.host.signals import GUARD

    GUARD.install()  # before JAX loads: Ctrl-C at any moment is one line and exit 130
    try:
        code = _app()(standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except (Interrupted, Diverged) as e:
        if GUARD.claim():  # (a second Ctrl-C's thread may have said it: one line)
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
    finally:
        GUARD.uninstall()
    sys.exit(code if isinstance(code, int) else 0)


def run():
    """The console script: started again under jemalloc where it is installed, main(),
    then an exit that skips the interpreter's teardown (training/host/workarounds.py:
    malloc, fast-exit)."""
    from jaxtrain.training.host.workarounds import exit_process, use_jemalloc

    try:
        use_jemalloc(sys.orig_argv)  # returns only where the command stays on glibc
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        exit_process(2)
    except OSError:  # the interpreter could not be started again: glibc, as before
        pass
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    exit_process(code)


if __name__ == "__main__":
    run()
