"""`jaxtrain plot`: train and test loss against step, one colour per run (matplotlib,
Agg backend, so it needs no display)."""

from pathlib import Path

from jaxtrain.training.rundir.records import loss_unit, read_config, read_metrics, train_curve


def plot_runs(workdirs: list, out, metric: str | None = None) -> Path:
    """Draws the runs' curves into the PNG `out`. Without `metric`, train loss (dashed)
    and test loss (solid); with it, that metric alone. Raises ValueError when no run
    has a record of it."""
    # The object API with the Agg canvas, without pyplot's global state: no display
    # needed, and safe to call from the training loop.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    drawn, values, units = 0, [], set()
    for i, workdir in enumerate(workdirs):
        records = read_metrics(workdir)
        units.add(loss_unit(read_config(workdir)))
        color = f"C{i % 10}"
        names = [metric] if metric else [train_curve(records), "test_loss"]
        for name in names:
            points = [(r["step"], r[name]) for r in records if name in r]
            if not points:
                continue
            steps, ys = zip(*points)
            style = "--" if name.startswith("train") else "-"
            ax.plot(steps, ys, style, color=color, marker="." if len(points) < 30 else None,
                    label=f"{workdir} {name}")
            values += ys
            drawn += 1
    if not drawn and metric:
        known = sorted({k for w in workdirs for r in read_metrics(w) for k, v in r.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
        if known:
            raise ValueError(f"--metric {metric} is not in the runs' metrics.jsonl: pass one "
                             f"of {', '.join(known)}")
    if not drawn:
        what = metric or "test_loss"
        raise ValueError(f"no records of {what} in {', '.join(map(str, workdirs))}"
                         "/metrics.jsonl yet: plot after the first evaluation, or pass "
                         "--metric with a name from metrics.jsonl")
    positive = [v for v in values if v > 0]
    # A log scale once the values span more than a factor 10 (early losses dwarf late
    # improvements on a linear axis).
    if len(positive) == len(values) and max(values) > 10 * min(values):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    unit = units.pop() if len(units) == 1 and (metric is None or "loss" in metric) else ""
    ax.set_ylabel(f"{metric or 'loss'}" + (f" ({unit})" if unit else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    # Fixed margins: tight_layout draws the figure twice (110 ms against 70 ms).
    fig.subplots_adjust(left=0.11, right=0.97, top=0.96, bottom=0.11)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")  # readers never see half a PNG
    fig.savefig(tmp)
    tmp.replace(out)
    return out
