"""The benchmark scripts run (on the tiny dataset; their figures mean nothing here), and
the PyTorch references are the same models as jaxtrain's."""

import json
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


@pytest.mark.slow
def test_torch_references_have_the_same_parameters():
    vae = VAEFamily(VAEConfig(image_shape=SHAPE)).init(jax.random.PRNGKey(0), 1)
    assert parameter_count(vae) == torch_parameter_count(torch_reference.TorchVAE())
    config = TransformerConfig(context=256, vocab_size=65, output_size=65)
    tokens = jax.numpy.zeros((1, 256), jax.numpy.int32)
    params = Transformer(config).init(jax.random.PRNGKey(0), tokens)["params"]
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


def test_text_generation_rows_run_on_a_tiny_model(tmp_path):
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
