"""An eval's plots: ROC curves and score histograms per subset, as PNG files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from .predict import scores_from_logits
from .tables import EvalResult


def safe_name(subset: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", subset).strip("_") or "subset"


def write_plots(result: EvalResult, out_dir: Path) -> list[Path]:
    """Per subset: ROC curves (one per perturbation) and score histograms (one panel per perturbation)."""
    from matplotlib.figure import Figure  # the object API needs no global backend: Agg draws the PNG

    labels = np.array([s.label for s in result.dataset.samples], dtype=int)
    subsets = np.array([s.subset for s in result.dataset.samples], dtype=object)
    scored = [(t, scores_from_logits(np.nan_to_num(t.predictions.logits), result.temperature)) for t in result.tables]
    written = []
    for name in result.dataset.subsets:
        roc = Figure(figsize=(5, 5))
        ax = roc.add_subplot()
        hist = Figure(figsize=(5, 2.2 * len(scored)))
        axes = hist.subplots(len(scored), 1, squeeze=False)[:, 0]
        for (t, scores), hax in zip(scored, axes):
            keep = (subsets == name) & t.predictions.ok
            y, s = labels[keep], scores[keep]
            row = next(r for r in t.subsets if r.subset == name)
            if row.auc is not None:
                fpr, tpr, _ = roc_curve(y, s)
                ax.plot(fpr, tpr, label=f"{t.perturbation.name} (AUC {row.auc:.3f})")
            bins = np.linspace(0, 1, 51)
            hax.hist(s[y == 0], bins=bins, alpha=0.6, label=f"real ({row.real})", color="tab:blue")
            hax.hist(s[y == 1], bins=bins, alpha=0.6, label=f"fake ({row.fake})", color="tab:red")
            hax.axvline(result.threshold, color="black", linestyle="--", linewidth=1)
            hax.set_title(f"{name} · {t.perturbation.name}", fontsize=9)
            hax.legend(fontsize=7)
        hax.set_xlabel("score = P(fake)")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC · {name}")
        ax.set(xlim=(0, 1), ylim=(0, 1))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
        hist.tight_layout()
        for fig, kind in ((roc, "roc"), (hist, "hist")):
            path = out_dir / f"{kind}_{safe_name(name)}.png"
            fig.savefig(path, dpi=100)
            written.append(path)
    return written
