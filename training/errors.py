"""Exceptions the command line turns into one line and an exit code (no heavy imports)."""


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Diverged(Exception):
    """The loss became NaN or infinite; nothing of the diverged state was saved."""

    exit_code = 3
