"""Real text at scale, as whole `jaxtrain` commands: a BPE against characters in the same
training time, tokenization speed and peak memory on a corpus of hundreds of MB, and the
load of an exported model into PyTorch. Writes benchmarks/results/text.{md,json}.

    python benchmarks/text_bench.py [--budget-s 150] [--corpus-mb 200] [--quick]

The texts are what a Debian machine has offline: the Vim 9.0 documentation
(/usr/share/vim/vim*/doc/*.txt, 9.5 MB, a folder of .txt files) and, for the large
corpus, copies of it beside the Python standard library's sources renamed .txt.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BABY_GPT = ["--model", "transformer", "--dataset", "text", "--layers", 4, "--d-model", 128,
            "--heads", 4, "--context", 256, "--batch-size", 32]


def vim_docs() -> Path:
    folders = sorted(Path("/usr/share/vim").glob("vim*/doc"))
    if not folders or not list(folders[-1].glob("*.txt")):
        sys.exit("text_bench needs the Vim documentation (Debian's vim-runtime)")
    return folders[-1]


def fit(args, workdir: Path, env) -> dict:
    """`jaxtrain fit ARGS` as a whole command under /usr/bin/time: its records, seconds
    and peak resident memory."""
    command = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "jaxtrain.cli.main", "fit",
               *map(str, args), "--workdir", str(workdir), "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {"seconds": took, "records": records, "peak_rss_mb": int(
        proc.stderr.strip().splitlines()[-1]) / 1024, "stderr": proc.stderr}


def trained_seconds(records) -> float:
    """The run's periods (steps, evaluations, saves), from its first step."""
    return sum(r["period_s"] for r in records)


def tokenizers_at_equal_time(corpus: Path, budget: float, work: Path, env, quick: bool):
    """Each tokenizer's step time from a short probe, then a run of budget seconds of
    steps (its own schedule spans it); the validation bits per byte at the end."""
    cases = {"char": ["--tokenizer", "char"],
             "bpe 2048": ["--tokenizer", "bpe", "--vocab-size", 2048]}
    if quick:
        cases = {"char": ["--tokenizer", "char"], "bpe 512": ["--tokenizer", "bpe",
                                                               "--vocab-size", 512]}
    model = BABY_GPT if not quick else [*BABY_GPT[:4], "--layers", 1, "--d-model", 16,
                                        "--heads", 2, "--context", 32, "--batch-size", 4]
    out = {}
    for name, args in cases.items():
        probe = fit([*model, *args, "--data-file", corpus, "--steps", 40, "--eval-every", 20],
                    work / f"probe-{name}", env)
        step_s = probe["records"][1]["train_s"] / 20  # the second period: no compiles
        steps = max(20, int(budget / step_s))
        run = fit([*model, *args, "--data-file", corpus, "--steps", steps, "--eval-every",
                   max(10, steps // 8)], work / f"run-{name}", env)
        last = run["records"][-1]
        out[name] = {"steps": steps, "step_s": step_s, "trained_s": trained_seconds(
            run["records"]), "command_s": run["seconds"],
            "test_loss": last["test_loss"], "bits_per_byte": last["test_bits_per_byte"],
            "tokens_per_s": last.get("tokens_per_s"),
            "curve": [(r["step"], r["test_bits_per_byte"]) for r in run["records"]]}
        print(f"{name}: {steps} steps, {out[name]['trained_s']:.0f} s, "
              f"{out[name]['bits_per_byte']:.3f} bits/byte", file=sys.stderr)
    return out


def large_corpus(mb: int, work: Path) -> Path:
    """A folder of at least `mb` MB of .txt files: copies of the Vim docs and of the
    Python standard library's sources."""
    folder = work / "corpus"
    sources = [*vim_docs().glob("*.txt"),
               *sorted(Path(os.__file__).parent.glob("*.py"))]
    total, copy = 0, 0
    while total < mb * 1e6:
        target = folder / f"copy{copy:02d}"
        target.mkdir(parents=True)
        for path in sources:
            data = path.read_bytes()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            (target / (path.stem + ".txt")).write_bytes(data)
            total += len(data)
        copy += 1
    return folder


def corpus_at_scale(mb: int, work: Path, env, quick: bool) -> dict:
    """A BPE trained and the corpus tokenized by the first fit (cold token cache), then
    a second fit from the cache; peak resident memory of each whole command."""
    corpus = large_corpus(mb, work)
    size = sum(p.stat().st_size for p in corpus.rglob("*.txt"))
    args = [*BABY_GPT, "--tokenizer", "bpe", "--vocab-size", 2048, "--data-file", corpus,
            "--steps", 20 if not quick else 4, "--eval-every", 20 if not quick else 4]
    cold = fit(args, work / "scale-cold", env)
    meta = json.loads(max((Path(env["XDG_CACHE_HOME"]) / "jaxtrain" / "tokens").glob(
        "*/meta.json"), key=lambda p: p.stat().st_mtime).read_text())
    warm = fit(args, work / "scale-warm", env)
    glibc = fit(args, work / "scale-glibc", {**env, "JAXTRAIN_MALLOC": "glibc"})
    small = work / "small.txt"  # the same run on 0.3 MB: what the corpus itself costs
    with open(small, "wb") as f:
        f.write(next(corpus.rglob("*.txt")).read_bytes()[:300_000])
    args[args.index(corpus)] = small
    baseline = fit(args, work / "scale-small", env)
    shutil.rmtree(corpus)
    first = cold["records"][0]
    return {"corpus_mb": size / 1e6, "tokens": meta["train_tokens"] + meta["val_tokens"],
            "tokenize_s": meta["seconds"], "tokenize_mb_s": size / 1e6 / meta["seconds"],
            "cold_data_s": first["start_data_s"], "warm_data_s": warm["records"][0][
                "start_data_s"], "cold_rss_mb": cold["peak_rss_mb"],
            "warm_rss_mb": warm["peak_rss_mb"], "glibc_rss_mb": glibc["peak_rss_mb"],
            "small_rss_mb": baseline["peak_rss_mb"], "cold_s": cold["seconds"],
            "warm_s": warm["seconds"]}


def export_load(work: Path, env) -> str:
    """Export the char run and time its load into the PyTorch twin in a fresh process."""
    run = work / "run-char"
    out = work / "model.safetensors"
    subprocess.run([sys.executable, "-m", "jaxtrain.cli.main", "export", "--workdir", str(run),
                    "--out", str(out)], check=True, capture_output=True, env=env)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "export_load.py"),
                           str(out)], check=True, capture_output=True, text=True, env=env)
    return proc.stdout.strip()


def markdown(r) -> str:
    m = r["machine"]
    lines = [f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores) with "
             f"`python benchmarks/text_bench.py --budget-s {m['budget_s']:g} --corpus-mb "
             f"{m['corpus_mb']}`; whole `jaxtrain fit` commands.", "",
             f"**A BPE against characters in the same training time** (baby GPT: 4 layers, "
             f"width 128, context 256, batch 32; the Vim 9.0 docs, {r['vim_mb']:.1f} MB, "
             "the last 10% of each file validates). Each tokenizer's step time is probed, "
             "then it trains for the budget's steps (its schedule spans them):", "",
             "| tokenizer | steps | step | trained | validation bits/byte | test loss |",
             "|---|---|---|---|---|---|"]
    for name, c in r["tokenizers"].items():
        unit = "nats/char" if name == "char" else "nats/token"
        lines.append(f"| {name} | {c['steps']:,} | {1000 * c['step_s']:.0f} ms | "
                     f"{c['trained_s']:.0f} s | **{c['bits_per_byte']:.3f}** | "
                     f"{c['test_loss']:.3f} {unit} |")
    s = r["scale"]
    lines += ["", f"**A corpus of {s['corpus_mb']:.0f} MB** (a folder of .txt files: copies of "
              "the Vim docs and the Python standard library's sources), `--tokenizer bpe "
              "--vocab-size 2048`, 20 steps of baby GPT:", "",
              "| measure | value |", "|---|---|",
              f"| tokenization (cold cache) | {s['tokenize_s']:.1f} s, "
              f"**{s['tokenize_mb_s']:.1f} MB/s**, {s['tokens']:,} tokens |",
              f"| the run's data step, cold: BPE trained on the first 64 MB, corpus tokenized "
              f"| {s['cold_data_s']:.1f} s |",
              f"| the same, warm (tokens from the cache) | {s['warm_data_s']:.1f} s |",
              f"| peak resident memory of the whole command, cold / warm | "
              f"**{s['cold_rss_mb']:,.0f} MB** / {s['warm_rss_mb']:,.0f} MB |",
              f"| the same, warm, on 0.3 MB of text (no corpus to speak of) | "
              f"{s['small_rss_mb']:,.0f} MB |",
              f"| the same, warm, with glibc's malloc defaults (`JAXTRAIN_MALLOC=glibc`: "
              f"freed step memory goes back) | {s['glibc_rss_mb']:,.0f} MB |",
              f"| whole command, cold / warm | {s['cold_s']:.0f} s / {s['warm_s']:.0f} s |",
              "", f"**Export:** {r['export_load']}."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=150)
    parser.add_argument("--corpus-mb", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="tiny models: the code path")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="text-bench-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "JAX_PLATFORMS": "cpu"}
    docs = vim_docs()
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    results = {"machine": {"date": datetime.date.today().isoformat(), "cpu": cpu,
                           "cores": os.cpu_count(), "budget_s": args.budget_s,
                           "corpus_mb": args.corpus_mb},
               "vim_mb": sum(p.stat().st_size for p in docs.glob("*.txt")) / 1e6}
    results["tokenizers"] = tokenizers_at_equal_time(docs, args.budget_s, work, env, args.quick)
    results["export_load"] = export_load(work, env)
    results["scale"] = corpus_at_scale(args.corpus_mb, work, env, args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "text.json").write_text(json.dumps(results, indent=1))
    (args.out / "text.md").write_text(markdown(results))
    print(markdown(results))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
