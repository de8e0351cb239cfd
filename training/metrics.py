"""One name per metric: the keys of a run's record, what each is in, and its group.

A record is one line of <workdir>/metrics.jsonl, one evaluation; `eval --json` prints a
record of the same keys for a checkpoint. A family names its numbers without a phase
("loss", "recon", "kl": models/family.py); the engine keys them once, "train_<name>" for
the training step's means and "test_<name>" for the test set's, and from then on every
reader uses the same key: the console, TensorBoard and W&B (tag "<group>/<key>"),
`jaxtrain runs`, `jaxtrain plot --metric KEY`. The losses' units depend on the family
(nats per image, per character, per token: `Family.units`); every other unit is here.

METRICS documents the keys (docs/reference/metrics.md is made from it); it does not
decide what is written: the writers write every number of a record, whatever its name
(`scalars`), a key the table lacks under the group its prefix says.

No heavy imports: `runs` and `plot` read records with this module alone.
"""

import dataclasses
import numbers


@dataclasses.dataclass(frozen=True)
class Metric:
    group: str  # train (each log), test, speed (TensorBoard), time, run (bookkeeping)
    unit: str  # "" for counts and ratios; "loss" for the family's loss unit
    help: str
    last: bool = False  # a log period's value is its last step's (a rate), not the mean


LOSS = "loss"  # the family's unit (Family.units[key])

METRICS = {
    "step": Metric("run", "", "optimizer steps done"),
    "epoch": Metric("run", "", "epochs done (a fraction mid-epoch); runs in steps lack it"),
    "train_loss": Metric("train", LOSS, "the training objective, mean over the period"),
    "train_recon": Metric("train", LOSS, "VAE: reconstruction term of the objective"),
    "train_kl": Metric("train", LOSS, "VAE: KL term of the objective"),
    "train_nll": Metric("train", "nats/image", "digits: the objective per image"),
    "train_bits_per_dim": Metric("train", "bits/dim", "digits: the objective in bits/pixel"),
    "train_bits_per_char": Metric("train", "bits/char", "text, char tokenizer: the objective "
                                                        "in bits"),
    "train_grad_norm": Metric("train", "", "global gradient norm before clipping"),
    "lr": Metric("train", "", "the learning rate of the period's last step", last=True),
    "train_steps": Metric("run", "", "steps in the evaluation period"),
    "test_loss": Metric("test", LOSS, "the test loss of the EMA parameters (an exact NLL or "
                                      "the VAE's -ELBO)"),
    "test_recon": Metric("test", LOSS, "VAE: reconstruction term of the test loss"),
    "test_kl": Metric("test", LOSS, "VAE: KL term of the test loss"),
    "test_bits_per_dim": Metric("test", "bits/dim", "image models: the test loss per pixel"),
    "test_bits_per_char": Metric("test", "bits/char", "text, char tokenizer: the test loss "
                                                      "in bits"),
    "test_bits_per_byte": Metric("test", "bits/byte", "text: the test loss over the UTF-8 "
                                                      "bytes the validation windows predict "
                                                      "(compares tokenizers)"),
    "test_iw_nll": Metric("test", "nats/image", "VAE: importance-weighted -log p(x|c)"),
    "test_iw_bits_per_dim": Metric("test", "bits/dim", "VAE: the same per pixel"),
    "iw_samples": Metric("run", "", "importance samples per test image"),
    "iw_chunk": Metric("run", "", "importance samples one pass decodes per test image, as many "
                       "as fit the pass's scratch memory (training/engine/evaluate.py)"),
    "test_class_accuracy": Metric("test", "", "share of samples the judge puts in their class"),
    "test_frechet": Metric("test", "", "Frechet distance of samples to test images"),
    "test_frechet_floor": Metric("test", "", "the same for training images (the floor)"),
    "judge_accuracy": Metric("run", "", "the judge's own test accuracy"),
    "class_accuracy_per_class": Metric("run", "", "test_class_accuracy of each class (a list)"),
    "samples_per_class": Metric("run", "", "samples drawn per class for the judge"),
    "sample_pixels": Metric("run", "", "grey or binary: what the samples and test images are"),
    "class_names": Metric("run", "", "a folder dataset's classes (a list)"),
    "stopped_early": Metric("run", "", "true in the record where early stopping ended the run"),
    "samples_per_s": Metric("speed", "samples/s", "training examples per second"),
    "tokens_per_s": Metric("speed", "tokens/s", "sequence models: tokens per second"),
    "gflops": Metric("speed", "GFLOP/s", "training FLOPs per second (model FLOPs)"),
    "mfu": Metric("speed", "", "gflops / the device's peak (--peak-gflops)"),
    "period_s": Metric("speed", "s", "the whole evaluation period: steps, eval, "
                                     "samples, save (the writers then take writers_s)"),
    "train_s": Metric("time", "s", "the period's steps (data included)"),
    "data_s": Metric("time", "s", "the period's batches: reading and copying to devices"),
    "eval_s": Metric("time", "s", "evaluation of the test set"),
    "iw_s": Metric("time", "s", "the importance-weighted evaluation"),
    "quality_s": Metric("time", "s", "drawing and judging samples"),
    "samples_s": Metric("time", "s", "drawing the evaluation's grids and text sample"),
    "save_s": Metric("time", "s", "the blocking part of the checkpoint save"),
    "writers_s": Metric("time", "s", "the record's writers before metrics.jsonl: "
                                     "TensorBoard, W&B, PNG files, the console line (so "
                                     "in metrics.jsonl alone)"),
    "first_step_s": Metric("time", "s", "from the command's start to its first step"),
    # The start of a command, in its first record (training/engine/startup.py).
    "start_imports_s": Metric("time", "s", "the interpreter, the CLI, JAX (and torch for images)"),
    "start_restore_s": Metric("time", "s", "resume: restoring the checkpoint"),
    "start_data_s": Metric("time", "s", "reading the data (and completing the config from it)"),
    "start_init_s": Metric("time", "s", "building the run and initializing its state"),
    "start_probe_s": Metric("time", "s", "--steps-per-call 0: timing the step"),
    "compile_s": Metric("time", "s", "programs compiled (or loaded from the persistent cache) "
                                     "since the last record: {name: seconds}"),
    "compile_cached": Metric("time", "", "the names in compile_s the cache served"),
    "compile_background": Metric("time", "", "the names in compile_s compiled in the "
                                             "background during the start"),
    # What `eval --json` adds about the checkpoint it evaluated.
    "model": Metric("run", "", "eval: the run's --model"),
    "dataset": Metric("run", "", "eval: the run's --dataset"),
    "test_examples": Metric("run", "", "eval: test examples (or validation windows) scored"),
    "targets": Metric("run", "", "eval, image runs: grey or binary, the pixels scored"),
    "val_file": Metric("run", "", "eval, text runs: the --val-file scored (null: the last "
                                  "10% of each --data-file file)"),
}


def train_key(name: str) -> str:
    """The record key of a training step's metric: "loss" -> "train_loss"; "lr" is lr."""
    return name if name == "lr" else f"train_{name}"


def test_key(name: str) -> str:
    """The record key of a test metric: "recon" -> "test_recon"."""
    return f"test_{name}"


def group(key: str) -> str:
    """The key's group in METRICS; for a key it lacks, train or test by its prefix, else
    other."""
    if key in METRICS:
        return METRICS[key].group
    return next((g for g in ("train", "test") if key.startswith(f"{g}_")), "other")


def tag(key: str) -> str:
    """The TensorBoard and W&B tag of a key: "<group>/<key>", e.g. "test/test_loss"."""
    return f"{group(key)}/{key}"


def scalars(record) -> dict:
    """The record's numbers (int or float; not bools, lists, dicts or strings), whatever
    their names: what TensorBoard and W&B write."""
    return {k: v for k, v in record.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool)}


def short(key: str) -> str:
    """A key without its phase, for lines already about one phase: "test_kl" -> "kl"."""
    for prefix in ("train_", "test_"):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


# Test metrics said on a line of their own (--final-eval, `eval --samples`/`--iw-samples`:
# training/scoring/quality.py:describe_quality, the IW line), not again in describe's.
OWN_LINE = ("test_class_accuracy", "test_frechet", "test_frechet_floor", "test_iw_nll",
            "test_iw_bits_per_dim")


def epoch_text(epoch: float) -> str:
    """How an epoch count is shown: '2' when whole, else two decimals ('0.75')."""
    return f"{epoch:.0f}" if epoch == int(epoch) else f"{epoch:.2f}"


def describe(record: dict, unit: str = "") -> str:
    """'test loss 237.93 nats/image (recon 225.71, kl 12.22)': the test loss (in `unit`)
    and the record's other test metrics."""
    rest = ", ".join(f"{short(k)} {v:.2f}" if abs(v) >= 10 else f"{short(k)} {v:.4g}"
                     for k, v in record.items()
                     if k in METRICS and METRICS[k].group == "test" and k != "test_loss"
                     and k not in OWN_LINE)
    return (f"test loss {record['test_loss']:.2f}" + (f" {unit}" if unit else "")
            + (f" ({rest})" if rest else ""))

