"""`--wandb`: an offline Weights & Biases run, read back from the .wandb file wandb wrote
(its record framing, wandb's own protos): the config, the scalars at the steps of
metrics.jsonl, the image grids, a text sample; `resume` continuing the same W&B run; and
the one line when wandb is not installed."""

import importlib.util
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, fit_args, records

# The optional extra (`make install` takes it); the missing-package test needs none.
needs_wandb = pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                                 reason="the wandb extra is not installed")


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """wandb offline and quiet, its own folders in the test's temp dir (not ~/.config)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        folder = tmp_path / name.lower()
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))


BLOCK = 32768  # a .wandb file is a LevelDB-style log: 32 KiB blocks of framed records
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_wandb(path: Path) -> list:
    """The records (wandb_internal_pb2.Record) of a .wandb file: a 7-byte header (":W&B",
    0xBEE1, version 0), then records of a 7-byte frame (crc32, length, type) each, split
    across blocks where they do not fit; a block's last < 7 bytes are padding."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    out, pos, pieces = [], 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zeros: the rest of the block is padding
            pos += left
            continue
        pieces += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            out.append(wandb_internal_pb2.Record.FromString(pieces))
            pieces = b""
    return out


def offline_runs(workdir: Path) -> list[dict]:
    """Each offline run in <workdir>/wandb/, oldest first: its run record and history
    ({step: {key: value}}, media as their JSON descriptions)."""
    runs = []
    for folder in sorted((workdir / "wandb").glob("offline-run-*")):
        path, = folder.glob("run-*.wandb")
        run, history = None, {}
        for record in read_wandb(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
            elif kind == "history":
                row = history.setdefault(record.history.step.num, {})
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    row[key] = json.loads(item.value_json)
        runs.append({"folder": folder, "run": run, "history": history})
    return runs


def at(history: dict, key: str) -> dict:
    """{step: value} of a scalar, or of a media item ({"_type": "image-file", "path": ...};
    the history holds its fields as "<key>/<field>")."""
    out = {}
    for step, row in history.items():
        fields = {k[len(key) + 1:]: v for k, v in row.items() if k.startswith(key + "/")}
        if key in row or fields.get("_type"):
            out[step] = row[key] if key in row else fields
    return out


@pytest.mark.slow
@needs_wandb
def test_an_offline_wandb_run_reads_back_and_resume_continues_it(tmp_path, data_dir,
                                                                  jaxtrain):
    workdir = tmp_path / "run"
    wandb_args = ["--wandb", "--wandb-project", "jt-test", "--wandb-group", "g1",
                  "--wandb-tags", "tiny, vae"]
    proc = jaxtrain(*fit_args(data_dir, workdir, 1, *wandb_args), check=True)
    assert f"wandb sync {workdir / 'wandb'}/offline-run-*" in proc.stderr
    run_id = (workdir / "wandb" / "run_id").read_text().strip()
    first, = offline_runs(workdir)
    run = first["run"]
    assert (run.run_id, run.project, run.display_name, run.run_group, list(run.tags)) == \
        (run_id, "jt-test", "run", "g1", ["tiny", "vae"])
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["model"] == "vae" and config["train"]["batch_size"] == 8
    assert config["train"]["wandb_tags"] == ["tiny", "vae"]
    assert config["model_config"]["latent_dim"] == 4

    jaxtrain("resume", "--workdir", workdir, "--epochs", 2, check=True)
    runs = offline_runs(workdir)
    assert len(runs) == 2 and runs[1]["run"].run_id == run_id  # the same W&B run
    assert (workdir / "wandb" / "run_id").read_text().strip() == run_id
    history = {**runs[0]["history"], **runs[1]["history"]}
    assert set(runs[0]["history"]) == {4, 8} and set(runs[1]["history"]) == {12, 16}
    # What TensorBoard gets, at the same steps: train metrics at each log, the test
    # metrics (those of metrics.jsonl), speed and the grids at each evaluation.
    assert sorted(at(history, "train/train_loss")) == [4, 8, 12, 16]
    logged = at(history, "test/test_loss")
    assert [r["step"] for r in records(workdir)] == sorted(logged) == [8, 16]
    for r in records(workdir):
        for key in ("test_loss", "test_recon", "test_kl", "samples_per_s"):
            group = "speed" if key == "samples_per_s" else "test"
            np.testing.assert_allclose(history[r["step"]][f"{group}/{key}"], r[key],
                                       rtol=1e-6)
    for name in ("samples", "recon"):
        images = at(history, name)
        assert sorted(images) == [8, 16]
        for step, image in images.items():
            assert image["_type"] == "image-file" and image["format"] == "png"
            folder = runs[step // 16]["folder"]
            assert (folder / "files" / image["path"]).read_bytes()[:4] == b"\x89PNG"

    # --overwrite starts a new W&B run: the old one's folder goes with the run.
    jaxtrain(*fit_args(data_dir, workdir, 1, *wandb_args, "--overwrite"), check=True)
    assert len(offline_runs(workdir)) == 1
    assert (workdir / "wandb" / "run_id").read_text().strip() != run_id


@pytest.mark.slow
@needs_wandb
def test_a_text_run_logs_its_sample(tmp_path, jaxtrain):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question.\n" * 30, encoding="utf-8")
    workdir = tmp_path / "text"
    jaxtrain("fit", "--model", "transformer", "--dataset", "text", "--data-file", text,
             "--layers", 1, "--d-model", 16, "--heads", 2, "--context", 16, "--batch-size", 4,
             "--warmup-steps", 1, "--steps", 4, "--eval-every", 2, "--log-every", 2,
             "--no-tensorboard", "--wandb", "--wandb-name", "shakes", "--workdir", workdir,
             check=True)
    run, = offline_runs(workdir)
    assert run["run"].display_name == "shakes"
    samples = at(run["history"], "sample")
    assert sorted(samples) == [2, 4] and samples[4]["_type"] == "html-file"
    page = (run["folder"] / "files" / samples[4]["path"]).read_text()
    assert "<pre>" in page and len(page) > 40
    assert sorted(at(run["history"], "test/test_loss")) == [2, 4]


def test_wandb_without_the_package_is_one_line(tmp_path, data_dir, jaxtrain, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails while set
    proc = jaxtrain(*fit_args(data_dir, tmp_path / "run", 1, "--wandb"))
    assert_one_line_error(proc, "--wandb needs the wandb package: pip install -e '.[wandb]'")
    assert not (tmp_path / "run").exists()  # refused before anything was written


@needs_wandb
def test_a_number_the_metric_table_lacks_reaches_wandb(tmp_path):
    """The W&B writer logs every number of a record, whatever its name, under the tags
    TensorBoard gets (tests/test_loop.py checks the event file)."""
    from test_loop import UNKNOWN, AddsUnknown, ArraySource
    from test_steps_per_call import vae_run

    from jaxtrain.training.engine.loop import Loop, run_loop
    from jaxtrain.training.metrics import tag
    from jaxtrain.training.rundir.writers import Jsonl, WandB

    run = vae_run(eval_every=2)
    run_loop(Loop(run, tmp_path, run.init_state(), ArraySource(), 0, 4, {}),
             [WandB(run.config), Jsonl(), AddsUnknown()])
    history = offline_runs(tmp_path)[0]["history"]
    for r in records(tmp_path):
        row = history[r["step"]]
        assert row["other/brand_new"] == UNKNOWN["brand_new"]
        assert row["test/test_brand_new"] == UNKNOWN["test_brand_new"]
        for k in ("test_loss", "eval_s", "train_s", "train_steps", "step"):
            np.testing.assert_allclose(row[tag(k)], r[k], rtol=1e-6)
    assert not any(k.endswith(("/words", "/values", "/flag")) for row in history.values()
                   for k in row)
