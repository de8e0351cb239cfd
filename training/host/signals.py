"""Ctrl-C (SIGINT) and SIGTERM for a command's whole life, from its first line.

Python's own SIGINT handler raises KeyboardInterrupt wherever the main thread is: in the
middle of an import, inside a garbage-collector callback (JAX's `_xla_gc_callback`,
where the exception is printed as "ignored" and the command carries on), or while an
Orbax save waits, leaving `<step>.orbax-checkpoint-tmp` behind. Here a signal never
raises. While the training loop runs, the first one is a flag the loop checks between
two calls (it saves, then exits: training/engine/loop.py); any other signal ends the
process at once, after a save in flight has finished, with one line on stderr and the
exit code 128 + the signal's number. Standard library only: installed before JAX loads.
"""

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

TMP = ".orbax-checkpoint-tmp"  # what Orbax names a checkpoint being written
SAVE_WAIT_S = 30  # at most this long for a save in flight; then its folder is removed


class Guard:
    """The process's handler. A command names its workdir (`workdir`, once it holds the
    workdir's lock) and its checkpoint manager (`manager`), the loop says when it takes
    the first signal (`loop_running`); `signum` is the flag the loop reads. `busy` is
    held while a record is written, so that an exit never cuts one in half."""

    def __init__(self):
        self.signum = None
        self.loop_running = False
        self.workdir: Path | None = None
        self.manager = None  # an Orbax CheckpointManager
        self.busy = threading.Lock()  # held by the main thread: checked, not re-entered
        self._old = None
        self._lock = threading.RLock()  # (a signal while its holder prints: no deadlock)
        self._waiting = self._said = False

    def install(self):
        self.signum, self.loop_running, self.workdir, self.manager = None, False, None, None
        self._waiting, self._said = False, False
        if threading.current_thread() is not threading.main_thread():
            return  # (a caller in a thread: signals are the main thread's to take)
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def uninstall(self):
        for s, handler in (self._old or {}).items():
            signal.signal(s, handler)
        self._old = None

    @property
    def installed(self) -> bool:
        return self._old is not None

    def _handle(self, signum, frame):
        if self.loop_running and self.signum is None:
            self.signum = signum  # the loop saves at its next call and raises Interrupted
            return
        if self._saving() or self.busy.locked():
            # A save in flight, or a record being written, which may need this (main)
            # thread to finish: wait for it in another thread, and let this one go on (it
            # may reach the loop's own exit first, which says the same).
            if not self._waiting:
                self._waiting = True
                threading.Thread(target=self.exit_now, args=(signum,), daemon=True).start()
            return
        self.exit_now(signum)

    def _saving(self) -> bool:
        """Whether Orbax is writing a checkpoint (or deleting an old one after it)."""
        try:
            return self.manager is not None and self.manager.is_saving_in_progress()
        except Exception:  # noqa: BLE001 (a closed manager: nothing in flight)
            return False

    def claim(self) -> bool:
        """True for the first caller only: the one that says the last line."""
        with self._lock:
            first, self._said = not self._said, True
            return first

    def exit_now(self, signum):
        """Waits for a checkpoint being written (and the record being written), removes
        a half-written one, says where the run stands in one line and ends the process
        (no interpreter teardown)."""
        name = signal.Signals(signum).name
        deadline = time.monotonic() + SAVE_WAIT_S
        while self._saving() and time.monotonic() < deadline:
            time.sleep(0.05)  # Orbax's threads finish the save meanwhile
        self.busy.acquire(timeout=max(0.0, deadline - time.monotonic()))
        ckpt = self.workdir / "checkpoints" if self.workdir else None
        steps = []
        if ckpt is not None and ckpt.is_dir():
            for folder in _tmp_folders(ckpt):
                shutil.rmtree(folder, ignore_errors=True)
            steps = sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
        if steps:
            line = (f"{name}: stopped; the last checkpoint is step {steps[-1]} in "
                    f"{self.workdir}; continue with: jaxtrain resume --workdir {self.workdir}")
        elif self.workdir is not None:
            line = f"{name}: stopped before the first checkpoint; nothing was saved"
        else:
            line = f"{name}: stopped"
        with self._lock:  # claim() waits here: the process ends with this line
            if not self._said:
                self._said = True
                sys.stdout.flush()
                if sys.stderr.isatty():  # off the progress bar's line
                    line = "\r\033[K" + line
                print(line, file=sys.stderr, flush=True)
                os._exit(128 + signum)


def _tmp_folders(ckpt: Path) -> list:
    try:
        return [p for p in ckpt.iterdir() if TMP in p.name]
    except OSError:
        return []


GUARD = Guard()
