"""Writers of the run's record: metrics.jsonl, TensorBoard event files, a Weights &
Biases run, curves.png and the console line. Each is a loop callback
(training/engine/loop.py), primary process only.
"""

import html
import importlib.util
import json
import sys
import time

from jaxtrain.training.engine.loop import Callback
from jaxtrain.training.host.workarounds import summary_writer_class
from jaxtrain.training.metrics import describe, scalars, tag


def record_scalars(record, logged) -> dict:
    """{tag: value} of every number in `record` but the train step's metrics `logged`
    already wrote at each log: the record holds their means over the evaluation period,
    which would put a second point at the last log's step."""
    return {tag(k): v for k, v in scalars(record).items() if k not in logged}


class Jsonl(Callback):
    """One JSON line per evaluation in <workdir>/metrics.jsonl."""

    keeps_record = True  # written after the other writers, with their writers_s

    def on_start(self, loop):
        # A resumed run starts again from its checkpoint: records past it (from a run
        # killed after its last good checkpoint) would be duplicates, so they go.
        path = loop.workdir / "metrics.jsonl"
        if loop.start and path.exists():
            lines = path.read_text().splitlines()
            kept = [line for line in lines
                    if line.strip() and json.loads(line)["step"] <= loop.start]
            if len(kept) != len(lines):  # written whole, then renamed: never half a file
                tmp = path.with_name(path.name + ".partial")
                tmp.write_text("".join(line + "\n" for line in kept))
                tmp.replace(path)

    def on_record(self, loop, record):
        with open(loop.workdir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


class TensorBoard(Callback):
    """Event files under <workdir>/tb/ (tensorboardX, no TensorFlow): train metrics at
    each log; every other number of the record (test metrics, speed, times, counts),
    the grids and (text runs) a generated text at each evaluation; and the resolved
    config as text. Tags are "<group>/<key>" with the record's keys (training/metrics.py:
    "train/train_loss", "test/test_kl"). A resumed run purges what was logged after its
    checkpoint, so the curves continue without duplicates."""

    def __init__(self, config_toml: str):
        self.config_toml = config_toml
        self.writer = None
        self.logged = set()  # the keys on_log writes

    def on_start(self, loop):
        SummaryWriter = summary_writer_class()
        # purge_step: TensorBoard hides events at or after this step written before it.
        self.writer = SummaryWriter(str(loop.workdir / "tb"),
                                    purge_step=loop.start + 1 if loop.start else None)
        if not loop.start:
            self.writer.add_text("config", "```\n" + self.config_toml + "\n```", 0)

    def on_log(self, loop, metrics):
        self.logged.update(metrics)
        for k, v in scalars(metrics).items():
            self.writer.add_scalar(tag(k), v, loop.step)

    def on_record(self, loop, record):
        for name, v in record_scalars(record, self.logged).items():
            self.writer.add_scalar(name, v, loop.step)
        for name, grid in loop.artifacts.get("images", {}).items():
            self.writer.add_image(name, grid, loop.step,
                                  dataformats="HW" if grid.ndim == 2 else "HWC")
        if "text" in loop.artifacts:  # a text run's sample (rundir/callbacks.py:Samples)
            self.writer.add_text("sample", loop.artifacts["text"], loop.step)
        self.writer.flush()

    def on_end(self, loop):
        if self.writer is not None:
            self.writer.close()


class WandB(Callback):
    """A Weights & Biases run under <workdir>/wandb/ (`--wandb`), fed what TensorBoard
    gets, at the same steps and under the same tags: train metrics at each log; every
    other number of the record, the grids and (text runs) a generated text at each
    evaluation; the resolved config as the run's config. Its id is kept in
    <workdir>/wandb/run_id, so a resumed run continues the same W&B run. Finished at the
    loop's end; a process killed (os._exit after a second signal, kill -9) may lose its
    last records, as TensorBoard does."""

    def __init__(self, config):
        self.config, self.run = config, None
        self.logged = set()  # the keys on_log writes

    def on_start(self, loop):
        wandb = import_wandb()
        folder = loop.workdir / WANDB
        folder.mkdir(exist_ok=True)
        id_file = folder / "run_id"
        # A resumed run (start > 0) continues its W&B run; a new one (fit) starts its own.
        run_id = id_file.read_text().strip() if loop.start and id_file.exists() else None
        train = self.config.train
        self.run = wandb.init(
            project=train.wandb_project, group=train.wandb_group,
            name=train.wandb_name or loop.workdir.absolute().name,
            tags=list(train.wandb_tags or ()), config=_wandb_config(self.config),
            dir=str(loop.workdir), mode=train.wandb_mode, id=run_id,
            resume="allow" if run_id else None,
            # The console stays the terminal's (no wrapping of stdout and stderr), and
            # wandb says only what matters (the done line names `wandb sync`).
            settings=wandb.Settings(console="off", quiet=True))
        id_file.write_text(self.run.id + "\n")

    def on_log(self, loop, metrics):
        self.logged.update(metrics)
        self.run.log({tag(k): v for k, v in scalars(metrics).items()}, step=loop.step)

    def on_record(self, loop, record):
        import wandb

        row = record_scalars(record, self.logged)
        for name, grid in loop.artifacts.get("images", {}).items():
            row[name] = wandb.Image(grid)
        if "text" in loop.artifacts:
            row["sample"] = wandb.Html(f"<pre>{html.escape(loop.artifacts['text'])}</pre>")
        self.run.log(row, step=loop.step)

    def on_end(self, loop):
        if self.run is not None:
            import wandb

            self.run.finish()
            self.run = None
            # Ends wandb's service process, which writes the .wandb file out only then.
            wandb.teardown()


WANDB = "wandb"  # <workdir>/wandb/: wandb's own folder, with our run_id


def _wandb_config(config) -> dict:
    """The run's config for W&B, less a text run's tokenizer (megabytes for a tokenizer
    file; <workdir>/tokenizer.json holds it)."""
    out = config.to_dict()
    out["data"] = {k: v for k, v in out["data"].items() if k not in ("vocab", "tokenizer_json")}
    return out
MISSING_WANDB = "--wandb needs the wandb package: pip install -e '.[wandb]'"


def check_wandb() -> None:
    """A one-line ValueError where wandb is not installed, without importing it (slow)."""
    if importlib.util.find_spec("wandb") is None:
        raise ValueError(MISSING_WANDB)


def import_wandb():
    try:
        import wandb
    except ImportError:
        raise ValueError(MISSING_WANDB) from None
    return wandb


class Curves(Callback):
    """<workdir>/curves.png (train and test loss against step), drawn when the command
    ends, once the run has two evaluations (a curve needs two points). During a run it
    is redrawn at an evaluation only when the time since its last drawing is SPACING
    times what that drawing took (matplotlib: about 1.4 s with its import, 0.3 s after,
    against a 7.6 s VAE epoch), so it costs at most 1/SPACING of the run; `jaxtrain
    plot` draws it at any time, TensorBoard shows the curves live."""

    SPACING = 100
    keeps_record = True  # it draws from metrics.jsonl: after Jsonl (before it in the list)

    def __init__(self):
        self.last, self.cost = time.perf_counter(), 1.5  # a guess at the first drawing
        self.drawn = True  # nothing new to draw yet

    def on_record(self, loop, record):
        self.drawn = False
        if time.perf_counter() - self.last >= self.SPACING * self.cost:
            self.draw(loop)

    def on_end(self, loop):
        path = loop.workdir / "metrics.jsonl"
        if not self.drawn and path.exists() and len(path.read_text().splitlines()) >= 2:
            try:
                self.draw(loop)
            except (ValueError, OSError):  # never in the way of how the run ended
                pass

    def draw(self, loop):
        from jaxtrain.training.rundir.plot import plot_runs

        t = time.perf_counter()
        plot_runs([loop.workdir], loop.workdir / "curves.png")
        self.last = time.perf_counter()
        self.cost, self.drawn = self.last - t, True


class Console(Callback):
    """The one line per evaluation on stdout."""

    def on_record(self, loop, record):
        run = loop.run
        parts = [run.where(loop.step)]
        units = run.family.units
        # The train loss in the test loss's unit where the family has it (the digits
        # Transformer's objective is per token, its train_nll per image).
        key = "train_nll" if "train_nll" in record else "train_loss"
        if key in record:
            parts.append(f"train loss {record[key]:.3g} {units.get(key, units['train_loss'])}")
        parts.append(describe(record, units["test_loss"]))
        if "samples_per_s" in record:
            rate = (f"{record['tokens_per_s']:,.0f} tokens/s" if "tokens_per_s" in record
                    else f"{record['samples_per_s']:,.0f} samples/s")
            if "gflops" in record:  # XLA's count arrives with the compiled step
                rate += f" {record['gflops']:.1f} GFLOP/s"
            if "mfu" in record:
                rate += f" ({100 * record['mfu']:.0f}% of peak)"
            if loop.period_start == loop.start:  # the command's first period: its
                rate += " (with start-up)"      # programs' first calls, compiles in it
            parts.append(rate)
        parts.append(f"{record['period_s']:.1f}s")
        print("  ".join(parts), flush=True)
        if loop.stop_reason:
            print(loop.stop_reason, file=sys.stderr, flush=True)
