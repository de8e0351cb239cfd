"""Where a compiled train step's time goes, by part of the model: a jax.profiler trace of
jaxtrain's step, each XLA operation's time summed under the JAX source it came from (the
op_name of its HLO metadata; a fusion is counted under its root operation). Used by
`python benchmarks/bench.py --only baby-gpt`.

The parts: forward or backward (JAX's transpose of the forward), then attention's
projections (the fused QKV and the output matmul), attention itself (scores, mask,
softmax, weighted sum and the head transposes), the MLP (its two matmuls), the other
elementwise work of the blocks (GELU, residual adds), the LayerNorms, the embeddings,
the LM head (final LayerNorm and output matmul), the loss (softmax cross-entropy), the
copies the blocks' nn.scan makes of its stacked parameters (each layer's slice forward,
the layers' gradients stacked backward); and
outside both passes the optimizer (clipping, AdamW), the EMA and the step's metrics. The
time in which no operation ran is its own line (IDLE); operations that ran at once on
XLA's two threads are each counted whole, so the lines may add up to more than the step.
"""

import collections
import glob
import gzip
import json
import re
import tempfile

import jax


def part_of(op_name: str) -> str:
    """The part of a step an HLO op_name ('jit(train_step)/jvp(Transformer)/...') is."""
    if "transpose(jvp(" in op_name:
        direction = "backward"
    elif "jvp(" in op_name:
        direction = "forward"
    else:
        return "optimizer, EMA and metrics"
    # The backward's paths open with "Transformer))/" (inside transpose(...)).
    path = re.sub(r"^Transformer\)+", "Transformer)", op_name.split("jvp(", 1)[1])
    in_block = re.search(r"/Blocks?(_\d+)?/", path) is not None  # scanned or unrolled
    if "/MultiHeadDotProductAttention_0/" in path:
        last = path.rsplit("/MultiHeadDotProductAttention_0/", 1)[1]
        what = ("attention projections" if last in ("dot_general", "add")
                else "attention (scores, softmax, sums)")
    elif in_block and "/Dense_" in path:
        what = "MLP matmuls"
    elif in_block and "/LayerNorm_" in path:
        what = "LayerNorms"
    elif in_block:
        what = "GELU, residuals"
    elif path.startswith("Transformer)/Dense_") or path.startswith("Transformer)/LayerNorm_"):
        what = "LM head"
    elif re.match(r"Transformer\)/(slice|concatenate|closed_call)", path):
        what = "the blocks' stacked parameters (per-layer slices, stacked gradients)"
    elif path.startswith("Transformer)"):
        what = "embeddings"
    else:
        what = "loss"
    return f"{direction}: {what}"


def profile(step, state, batch, steps: int = 20) -> dict:
    """Milliseconds per step of each part (part_of) of the jitted `step(state, batch)`,
    over `steps` traced steps after a warm-up; `state` is donated and not returned."""
    compiled = step.lower(state, batch).compile().as_text()
    origin = {}
    for line in compiled.splitlines():
        m = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{op_name="([^"]*)"', line)
        if m:
            origin[m.group(1)] = m.group(2)
    for _ in range(3):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    folder = tempfile.mkdtemp()
    with jax.profiler.trace(folder):
        for _ in range(steps):
            state, _ = step(state, batch)
        jax.block_until_ready(state)
    trace = json.load(gzip.open(glob.glob(f"{folder}/plugins/profile/*/*.trace.json.gz")[0]))
    parts, spans = collections.Counter(), []
    for event in trace["traceEvents"]:
        args = event.get("args", {})
        if event.get("ph") == "X" and args.get("hlo_module", "").startswith("jit_train_step"):
            name = origin.get(args.get("hlo_op"))
            parts[part_of(name) if name else "unattributed"] += event["dur"] / 1000 / steps
            spans.append((event["ts"], event["ts"] + event["dur"]))
    parts[IDLE] = idle_us(spans) / 1000 / steps
    return dict(parts.most_common())


IDLE = "no XLA operation running (between operations and steps)"


def idle_us(spans) -> float:
    """Microseconds from the first operation's start to the last one's end in which no
    operation ran (XLA:CPU may run two at once: their overlap is not counted twice)."""
    spans = sorted(spans)
    idle, end = 0.0, spans[0][1]
    for start, stop in spans[1:]:
        idle += max(0.0, start - end)
        end = max(end, stop)
    return idle
