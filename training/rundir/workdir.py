"""A run's folder: what a run writes there, clearing it for --overwrite, checking that it
can be written, and the lock that keeps a second writer out.

The lock is an `fcntl.flock` on <workdir>/.lock: the kernel drops it when the process
ends, however it ends, so a `kill -9` never leaves a stale lock behind.
"""

import fcntl
import os
import shutil
from pathlib import Path

CHECKPOINTS = "checkpoints"
LOCK = ".lock"
# What a run writes (removed by --overwrite); anything else a user keeps there stays.
RUN_FILES = ("metrics.jsonl", "config.toml", "tokenizer.json", "curves.png",
             "*_epoch[0-9][0-9][0-9].png", "*_step[0-9]*.png")
RUN_FOLDERS = (CHECKPOINTS, "broken-checkpoints", "tb", "wandb", "profile")


class WorkdirInUse(ValueError):
    """Another process holds the workdir's lock."""


def holds_run(workdir: Path) -> bool:
    ckpt = workdir / CHECKPOINTS
    return (ckpt.is_dir() and any(ckpt.iterdir())) or (workdir / "metrics.jsonl").exists()


def clear_run(workdir: Path) -> None:
    """Removes only what a run writes, never other files the user keeps there."""
    for name in RUN_FOLDERS:
        if (workdir / name).is_dir():
            shutil.rmtree(workdir / name)
    for pattern in RUN_FILES:
        for path in workdir.glob(pattern):
            path.unlink()


def _cannot_write(workdir: Path, error: OSError) -> ValueError:
    return ValueError(f"--workdir {workdir} cannot be written ({error.strerror or error}): "
                      "pass a folder you can write to")


def check_not_file(workdir: Path) -> None:
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir {workdir} is a file, not a folder: pass a folder path")


def create(workdir: Path) -> None:
    """Makes the folder (and its parents), or says in one line why it cannot."""
    check_not_file(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise _cannot_write(workdir, e) from None


class Lock:
    """An exclusive lock on a workdir for one writer (fit, resume), held until release()."""

    def __init__(self, workdir: Path):
        self.path = workdir / LOCK
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _cannot_write(workdir, e) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "another"
            os.close(self.fd)
            raise WorkdirInUse(f"{workdir} is in use by process {holder} (a fit or resume "
                               "writes there): wait for it to finish, stop it, or pass "
                               "another --workdir") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
