"""Where a command's fixed costs go: its start in parts (imports, data, model init, the
checkpoint it restores, the steps-per-call probe), each program XLA compiles or loads
from the persistent cache (training/host/compiles.py), and the first step. Said once
as one line at the first record and kept in it; later records name the programs
compiled in their period (the evaluation's, the IW estimate's, a sampler's).
"""

import os
import time
from pathlib import Path

import jax

from jaxtrain.training.engine.loop import Callback
from jaxtrain.training.engine.parallel import say
from jaxtrain.training.host.compiles import Compiles
from jaxtrain.training.host.workarounds import malloc_in_use


def process_seconds() -> float | None:
    """Seconds since this process started (Linux's /proc, 10 ms resolution), else None."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time
    except (OSError, ValueError, IndexError):
        return None


class Startup:
    """The parts of a command's start as it goes: made when the command begins (the
    process's age then is "imports": the interpreter, the CLI, the JAX stack), then
    `lap(name)` adds the seconds since the last lap to part `name`. Compiles are
    collected from here on."""

    def __init__(self):
        age = process_seconds()
        self.parts = {"imports": age} if age is not None else {}
        self.last = time.perf_counter()
        self.compiles = Compiles()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.parts[name] = self.parts.get(name, 0.0) + now - self.last
        self.last = now

    def close(self) -> None:
        """Stops collecting compiles (the command is over)."""
        self.compiles.close()


SHOWN = 4  # compiled programs named in the start line, the longest; the rest add up


def describe_start(record: dict) -> str:
    """'start: imports 5.2 s, data 1.1 s, init 0.4 s; compile train_step 2.3 s,
    eval_sums 0.6 s (cached), 12 others 0.9 s; first step 9.1 s after the command
    started'. Records written before 2026-12-03 may name programs compiled in a
    background thread: "(background)"."""
    parts = ", ".join(f"{k[len('start_'):-2]} {v:.1f} s" for k, v in record.items()
                      if k.startswith("start_") and k.endswith("_s"))
    cached = set(record.get("compile_cached", ()))
    background = set(record.get("compile_background", ()))
    programs = sorted(record.get("compile_s", {}).items(), key=lambda item: -item[1])
    shown = [f"{name} {s:.1f} s" + (" (cached)" if name in cached else
                                     " (background)" if name in background else "")
             for name, s in programs[:SHOWN]]
    if len(programs) > SHOWN:
        shown.append(f"{len(programs) - SHOWN} others {sum(s for _, s in programs[SHOWN:]):.1f} s")
    line = "start: " + parts + (f"; compile {', '.join(shown)}" if shown else "")
    if "first_step_s" in record:
        line += f"; first step {record['first_step_s']:.1f} s after the command started"
    return line


class StartCosts(Callback):
    """The start's parts and the first step's time in the first record of the process's
    first loop (a benchmark or test calling the trainer again would report the
    process's age), said as one line; in every record, the programs compiled (or loaded
    from the cache) since the last one: compile_s {name: seconds}, compile_cached."""

    reported = False  # by a loop of this process

    def __init__(self, startup: Startup | None = None):
        self.startup = startup or Startup()
        self.first_step = None
        self.first_record = self.awaiting_step = not StartCosts.reported

    def on_step(self, loop):  # after the first call (S steps with --steps-per-call S)
        if self.awaiting_step:
            StartCosts.reported, self.awaiting_step = True, False
            jax.block_until_ready(loop.state.step)
            self.first_step = process_seconds()
            if self.first_step is not None:
                say(f"first step done {self.first_step:.1f} s after the command started")

    def on_eval(self, loop, record):
        seconds, cached = self.startup.compiles.take()
        out = {"compile_s": seconds, "compile_cached": cached} if seconds else {}
        if self.first_record:
            self.first_record = False
            out.update({f"start_{k}_s": v for k, v in self.startup.parts.items()})
            if self.first_step is not None:
                out["first_step_s"] = self.first_step
            out["malloc"] = malloc_in_use()  # training/host/workarounds.py
            say(describe_start(out))
        return out

    def on_end(self, loop):
        self.startup.close()
