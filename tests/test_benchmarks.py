"""The benchmark scripts run (on the tiny dataset; their figures mean nothing here), and
the PyTorch references are the same models as jaxtrain's."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from conftest import SHAPE

from jaxtrain.models.transformer import Transformer, TransformerConfig
from jaxtrain.models.vae import VAEConfig, VAEFamily

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
torch_reference = pytest.importorskip("torch_reference")


def parameter_count(params):
    return sum(x.size for x in jax.tree.leaves(params))


def torch_parameter_count(model):
    return sum(p.numel() for p in model.parameters())


def test_the_scripts_no_test_runs_use_only_what_bench_has():
    """The benchmark scripts that run only on a GPU or for many minutes (gpu_bench.py,
    vae_conv.py, vae_step_flops.py, frechet_parts.py, step_variants.py) call bench.py's
    names, and the names they import from jaxtrain exist: a renamed constant broke the
    GPU check once, unnoticed (bench.NUM_PATCHES, gone with the data spec)."""
    import ast
    import importlib
    import importlib.util

    bench = importlib.import_module("bench")
    for name in ("gpu_bench.py", "vae_conv.py", "vae_step_flops.py", "frechet_parts.py",
                 "step_variants.py"):
        tree = ast.parse((ROOT / "benchmarks" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "bench":
                assert hasattr(bench, node.attr), f"{name}: bench.{node.attr}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxtrain"):
                module = importlib.import_module(node.module)
                for alias in node.names:  # a name in the module, or a submodule
                    assert hasattr(module, alias.name) or importlib.util.find_spec(
                        f"{node.module}.{alias.name}"), f"{name}: {node.module}.{alias.name}"


def test_vae_conv_tables_runs_timed_without_gnu_time(tmp_path):
    """benchmarks/vae_conv.py's timer for a machine without GNU time prints the lines its
    table reads, and --from W writes the table of runs made before (their records and
    stderr): K, the note, each variant against the first."""
    import vae_conv

    timed = subprocess.run([sys.executable, "-c", vae_conv._TIMED, sys.executable, "-c", ""],
                           capture_output=True, text=True, check=True).stderr
    for name, (loss, iw) in {"mlp": (233.9, 232.2), "conv": (232.7, 230.3)}.items():
        (tmp_path / name).mkdir()
        record = {"epoch": 10, "train_s": 2.0, "test_loss": loss, "test_iw_nll": iw,
                  "test_class_accuracy": 0.9, "test_frechet": 11.0, "test_frechet_floor": 2.9}
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps(record) + "\n")
        (tmp_path / name / "bench-settings.json").write_text(json.dumps(
            {"machine": "a GPU", "iw_samples": 1000, "parallel": 1}))
        (tmp_path / f"{name}.err").write_text("the judge's own test accuracy 91.2%\n" + timed)
    subprocess.run([sys.executable, ROOT / "benchmarks" / "vae_conv.py", "--from", tmp_path,
                    "--variants", "mlp,conv", "--out", tmp_path, "--name", "t", "--note",
                    "A note."], check=True, capture_output=True)
    table = (tmp_path / "t.md").read_text()
    assert "on a GPU, the runs one after the other" in table and "A note." in table
    assert "IW-NLL (K=1000)" in table and "| conv | 232.70 | 230.30 | 90.0% (91.2%) |" in table
    assert "conv - mlp: test -ELBO -1.20 nats, IW-NLL -1.90 nats" in table


@pytest.mark.slow
def test_torch_references_have_the_same_parameters():
    # Shapes alone (jax.eval_shape): nothing is computed or compiled.
    family = VAEFamily(VAEConfig(image_shape=SHAPE))
    vae = jax.eval_shape(lambda key: family.init(key, 1), jax.random.PRNGKey(0))
    assert parameter_count(vae) == torch_parameter_count(torch_reference.TorchVAE())
    config = TransformerConfig(context=256, vocab_size=65, output_size=65)
    tokens = jax.numpy.zeros((1, 256), jax.numpy.int32)
    params = jax.eval_shape(Transformer(config).init, jax.random.PRNGKey(0), tokens)["params"]
    assert parameter_count(params) == torch_parameter_count(
        torch_reference.TorchTransformer(65, 65, 256))


@pytest.mark.slow
def test_vae_epoch_benchmark_runs(data_dir):
    proc = subprocess.run([sys.executable, ROOT / "benchmarks" / "vae_epoch.py", "--dataset",
                           "mnist", "--data-dir", data_dir, "--batch-size", "8", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("data alone", "train steps alone", "data + steps", "eval"):
        assert name in proc.stdout


@pytest.mark.slow
def test_side_by_side_suite_writes_json_and_table(data_dir, tmp_path):
    proc = subprocess.run([sys.executable, ROOT / "benchmarks" / "bench.py", "--quick",
                           "--dataset", "mnist", "--data-dir", data_dir, "--out", tmp_path],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "bench.json").read_text())
    assert len(results["cases"]) == 8 and results["matmul_peak"]["peak_gflops"] > 0
    for case in results["cases"].values():
        assert case["ratio"]["median"] > 0 and len(case["jax"]["values"]) == 1
    assert results["epoch"]["epoch_s"]["jax"] > 0 and results["commands"]["help_s"]["median"] > 0
    table = (tmp_path / "bench.md").read_text()
    assert "| VAE train step, batch 8 |" in table and "KV cache" in table
    assert "| VAE train step, batch 8, 10 steps per call |" in table
    assert "| text generation, 15 greedy tokens" in table
    assert "| KV cache, 1 thread |" in (tmp_path / "generation.md").read_text()
    # The whole-command section: a cold and a warm command, and where their starts went.
    whole = results["whole"]["cases"]["VAE fit, 4 tiny steps"]
    assert whole["cold_s"] > 0 and whole["warm_s"]["median"] > 0
    assert whole["start"]["warm"].startswith("start: imports") and "(cached)" in \
        whole["start"]["warm"]
    assert "| VAE fit, 4 tiny steps |" in table


@pytest.fixture
def torch_threads():
    """PyTorch's threads as bench.py sets them, more than one (a trainer run earlier in
    this process leaves 1, and the all-threads rows would be the 1-thread rows)."""
    torch, before = torch_reference.torch, torch_reference.torch.get_num_threads()
    torch.set_num_threads(max(2, os.cpu_count() or 1))
    yield
    torch.set_num_threads(before)


def test_text_generation_rows_run_on_a_tiny_model(tmp_path, torch_threads):
    """The rows of `bench.py --only generation`: jaxtrain's KV-cache decoder and the
    PyTorch twin's generations from the same exported weights, greedy, agree; the page
    and JSON are written."""
    text_generation = pytest.importorskip("text_generation")
    config = text_generation.TINY.replace(context=8)
    family, params, model = text_generation.twins(config)
    start = torch_reference.torch.tensor([[1]])
    cached = model.generate(start, 7)[0].tolist()
    assert cached == model.generate(start, 7, cache=False)[0].tolist()
    ours = family.sample(params, jax.numpy.array([1]), jax.random.PRNGKey(0), 7, temperature=0)
    assert ours.tolist() == cached
    r = text_generation.generation(config, repeats=1)
    assert r["tokens"] == 7 and r["compile_s"] > 0 and r["same_greedy_tokens"] == 7
    rows = text_generation.cases(r)
    assert len(rows) == len(text_generation.SIDES)
    assert all(row["ratio"]["median"] > 0 and row["unit"] == "tokens/s" for row in rows.values())
    machine = {"date": "today", "cpu": "cpu", "cores": 2, "jax": "j", "torch": "t",
               "load_before": 0.0, "load_after": 0.0}
    page = text_generation.write(r, machine, tmp_path)
    assert "| KV cache, 1 thread |" in page and "7 greedy tokens" in page
    assert json.loads((tmp_path / "generation.json").read_text())["tokens"] == 7


def test_peak_rss_of_a_command_is_the_childs_own():
    """bench.py's peak RSS is the child's maximum resident set: a child that touches
    200 MB reports more than that, one that touches nothing far less."""
    bench = pytest.importorskip("bench")
    touch = "import numpy as np; a = np.ones(200 << 20, np.uint8); print(a.sum())"
    _, big = bench.peak_rss_command([sys.executable, "-c", touch])
    _, small = bench.peak_rss_command([sys.executable, "-c", "pass"])
    assert big > 200 and small < 100
    with pytest.raises(subprocess.CalledProcessError):
        bench.peak_rss_command([sys.executable, "-c", "raise SystemExit(3)"])


def test_whole_commands_table_shows_validation_and_peak_rss():
    """The whole-command rows carry the run's final validation and peak RSS beside the
    times, so a quality or memory shift shows in make bench's page."""
    bench = pytest.importorskip("bench")
    start = "start: imports 1.0 s"
    case = {"cold_s": 50.0, "warm_s": bench.summary([44.0]), "start": {"cold": start,
            "warm": start}, "first_step_s": {"cold": 5.8, "warm": 1.9},
            "test_loss": 1.67654, "peak_rss_mb": {"cold": 1024.4, "warm": 1000.0},
            "torch_s": bench.summary([80.0]), "ratio_cold": 1.6, "ratio_warm": 1.8}
    lines = bench.whole_markdown({"cases": {"baby GPT, 2000 steps": case}})
    row = next(line for line in lines if line.startswith("| baby GPT"))
    assert row.endswith("| 1.60x / 1.80x | 1.6765 | 1,024 / 1,000 MB |")


def test_baby_gpt_commands_do_nanogpts_work():
    """make bench's baby GPT pair is equal in work: jaxtrain evaluates as many windows as
    nanoGPT's estimate_loss (eval_iters batches of each split), as often, and reads the
    loss every step as its log_interval 1 does, at nanoGPT's sizes."""
    bench = pytest.importorskip("bench")
    script = bench.torch_char_script
    ours, theirs = bench.baby_gpt_commands(Path("t.txt"), steps=2000)
    flags = dict(zip(ours[::2], ours[1::2]))
    assert flags["--eval-windows"] == 2 * script.EVAL_ITERS * script.BATCH == 480
    assert (flags["--eval-every"], flags["--log-every"]) == (script.EVAL_INTERVAL, 1)
    assert (flags["--context"], flags["--batch-size"], flags["--dropout"]) == (64, 12, 0)
    assert theirs[-4:] == ["--data-file", "t.txt", "--steps", "2000"]


@pytest.mark.slow  # an end-to-end CLI run / a benchmark script's process
def test_nanogpt_loop_script_runs(tmp_path):
    """benchmarks/torch_char_script.py, tiny: nanoGPT's evaluations from step 0, a line
    per logged step, a checkpoint, and the accounts on its last line."""
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "torch_char_script.py"), "--data-file",
         str(text), "--steps", "4", "--eval-interval", "2", "--eval-iters", "1",
         "--out-dir", str(tmp_path / "out")], check=True, capture_output=True, text=True)
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("step")] == [
        "step 0", "step 2", "step 4"]
    assert sum(line.startswith("iter ") for line in lines) == 4
    assert lines[-1].startswith("done: 4 steps; evaluations ")
    assert (tmp_path / "out" / "ckpt.pt").exists()


def test_step_profile_names_the_parts_of_a_step():
    """benchmarks/step_profile.py sorts a tiny Transformer step's XLA operations into
    forward and backward parts of the model and the optimizer, and they add up."""
    bench = pytest.importorskip("bench")
    step_profile = pytest.importorskip("step_profile")
    assert step_profile.part_of("jit(train_step)/transpose(jvp(Transformer))/closed_call/"
                                "Blocks/MultiHeadDotProductAttention_0/dot_general") == \
        "backward: attention projections"
    assert step_profile.part_of("jit(train_step)/jvp(Transformer)/Blocks/"
                                "MultiHeadDotProductAttention_0/bhqd,bhkd->bhqk/dot_general") \
        == "forward: attention (scores, softmax, sums)"
    assert step_profile.part_of("jit(train_step)/jvp(Transformer)/Dense_0/dot_general") == \
        "forward: LM head"
    assert step_profile.part_of("jit(train_step)/transpose(jvp(Transformer))/Dense_0/"
                                "dot_general") == "backward: LM head"
    assert step_profile.part_of("jit(train_step)/jvp(Transformer)/slice") == \
        "forward: the blocks' stacked parameters (per-layer slices, stacked gradients)"
    assert step_profile.part_of("jit(train_step)/add") == "optimizer, EMA and metrics"
    config = TransformerConfig(layers=1, d_model=16, heads=2, dropout=0.0, context=8,
                               vocab_size=5, output_size=5)
    family = bench.CharLMFamily(config, bench.CharTokenizer("abcde"))
    train = bench.TrainConfig(batch_size=2, warmup_steps=1)
    schedule = bench.make_schedule(train, 10)
    state = jax.jit(lambda: bench.create_state(family, train,
                                           bench.make_optimizer(train, schedule)))()
    batch = {"tokens": jax.numpy.zeros((2, 9), jax.numpy.int32)}
    parts = step_profile.profile(bench.make_train_step(family, schedule, 0.9), state, batch, 2)
    assert "forward: MLP matmuls" in parts and "backward: MLP matmuls" in parts
    assert sum(parts.values()) > 0 and parts.get("unattributed", 0) < 0.5 * sum(parts.values())
    assert step_profile.IDLE in parts
    # Two operations overlapping, then a gap of 5: idle is the gap alone.
    assert step_profile.idle_us([(0, 10), (20, 30), (5, 15)]) == 5


def test_rss_watch_names_the_mapping_of_a_spike(tmp_path):
    """benchmarks/rss_watch.py: a command that fills 300 MB peaks above them, and its
    dumps above 200 MB name a mapping holding them."""
    fill = "import time; b = b'x' * (300 << 20); time.sleep(2.5)"
    proc = subprocess.run([sys.executable, ROOT / "benchmarks" / "rss_watch.py", "--above",
                           "200", "--out", tmp_path / "w", "--", sys.executable, "-c", fill],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert int(re.search(r"peak (\d+) MB", proc.stdout).group(1)) >= 300
    # The first dump may come mid-fill; the next, a second later, sees all of it.
    dumps = sorted(tmp_path.glob("w.smaps*"))
    assert len(dumps) >= 2
    largest = dumps[-1].read_text().splitlines()[1]
    assert int(largest.split()[0]) >= 300 * 1024, largest
