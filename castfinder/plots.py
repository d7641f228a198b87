"""Pictures of evaluation results (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

LEVELS = np.linspace(0, 1, 11)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def pr_curves(curves: dict[str, list[float]], out_dir: Path, title: str = "") -> list[str]:
    """One PNG per query (interpolated precision at 11 recall levels) and pr_all.png: every query
    faint, their mean bold."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for q, prec in curves.items():
        fig, ax = plt.subplots(figsize=(4, 3.2), dpi=100)
        ax.plot(LEVELS, prec, marker="o", color="#1f6feb")
        ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision", title=q)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"pr_{_safe(q)}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(str(path))
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for prec in curves.values():
        ax.plot(LEVELS, prec, color="#999999", alpha=0.5, linewidth=1)
    if curves:
        ax.plot(LEVELS, np.mean(list(curves.values()), axis=0), color="#d1242f", linewidth=2.5, label="mean")
        ax.legend(loc="lower left")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision",
           title=f"{title}: {len(curves)} characters".strip(": "))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / "pr_all.png"
    fig.savefig(path)
    plt.close(fig)
    return [str(path)] + paths


def survey_plot(rows: list[dict], path: Path) -> str | None:
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.plot([r["photos"] for r in rows], [r["map"] for r in rows], marker="o", color="#1f6feb")
    for r in rows:
        ax.annotate(f"{r['map']:.2f}", (r["photos"], r["map"]), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=8)
    ax.set(xlabel="photos per character", ylabel="MAP", ylim=(0, 1.05), title="MAP vs number of query photos")
    ax.set_xticks([r["photos"] for r in rows])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return str(path)
