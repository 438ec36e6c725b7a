"""The run report: loss and metric curves (PNG) and a Markdown page linking them with the samples."""
from __future__ import annotations

import json
from pathlib import Path

from memcore import safewrite
from memcore.logs import read_log


def _series(records, key):
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(run_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(run_dir)
    keys = sorted({k for r in records for k in r if k.startswith("loss/")})
    metric_keys = sorted({k for r in records for k in r if k.startswith("metric/")
                          and isinstance(r[k], (int, float))})
    out = []
    if keys:
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in keys:
            ax.plot(*_series(records, k), label=k[5:], linewidth=1)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out.append(Path(run_dir) / "losses.png")
        _save(fig, out[-1])
    for mk in metric_keys:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(*_series(records, mk), "o-", color="C3", label=mk[7:])
        ax.set_xlabel("step")
        ax.set_ylabel(mk[7:], color="C3")
        d_key = next((k for k in keys if k.endswith("/D") or k == "loss/D"), None)
        if d_key:
            ax2 = ax.twinx()
            ax2.plot(*_series(records, d_key), color="C0", alpha=0.5, linewidth=1)
            ax2.set_ylabel(d_key, color="C0")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out.append(Path(run_dir) / f"metric-{mk[7:].replace('/', '-')}.png")
        _save(fig, out[-1])
    return out


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt
    with safewrite.replacing(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def write_report(run_dir: Path, title: str, notes: list[str] | None = None) -> Path:
    run_dir = Path(run_dir)
    plots = plot_curves(run_dir)
    records = read_log(run_dir)
    last = records[-1] if records else {}
    lines = [f"# {title}", ""]
    lines += notes or []
    if last:
        lines += ["", f"Last logged step: {last['step']}", "", "| value | last |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in last.items()
                  if isinstance(v, float) and k not in ("time",)]
    metrics_file = run_dir / "metrics.jsonl"
    if metrics_file.exists():
        lines += ["", "## Metrics", "", "| step | metric | value | protocol |", "|---|---|---|---|"]
        for line in metrics_file.read_text().splitlines():
            rec = json.loads(line)
            protocol = ", ".join(f"{k}={v}" for k, v in rec.get("protocol", {}).items())
            for k, v in rec.get("values", {}).items():
                lines.append(f"| {rec['step']} | {k} | {v:.4g} | {protocol} |")
    lines += [""]
    for p in plots:
        lines += [f"![{p.stem}]({p.name})", ""]
    if (run_dir / "samples" / "latest.png").exists():
        lines += ["## Latest samples (EMA generator, fixed seeds)", "", "![samples](samples/latest.png)", ""]
    path = run_dir / "report.md"
    safewrite.write_text(path, "\n".join(lines))
    return path
