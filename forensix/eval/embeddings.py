"""`forensix eval --embeddings`: 2-D t-SNE maps of the embedding a detector's head scores, per subset and
for all subsets together (the DeeCLIP authors' figures), as PNG plus the coordinates as CSV.

Time is bounded by a seeded subsample: at most ``max_per_subset`` images of each subset, half real
and half fake where both are there, are decoded, embedded and mapped, and at most ALL_MAX of those
in the map of all subsets; each map's title says how many of how many images it shows. The
embedding is the one the logit comes from (``Detector.embeddings``; ``model.head`` of it is the
logit), so the map shows what the head separates.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..datasets import Dataset, Sample
from ..detector import Detector
from .outputs import cell
from .perturbations import Perturbation
from .plots import safe_name
from .predict import EvalOptions, read_batches

ALL = "all subsets"
ALL_MAX = 4000  # points in the map of all subsets (a seeded sample of the subsets' samples): about a minute
MIN_POINTS = 5  # t-SNE needs a few neighbours to say anything


@dataclass
class EmbeddingMap:
    """One t-SNE map: which samples (dataset indices), their 2-D coordinates, and of how many it is a sample."""

    subset: str
    indices: np.ndarray
    xy: np.ndarray  # (n, 2)
    of: int  # the images the subset holds (readable or not)


def pick(samples: Sequence[Sample], max_per_subset: int, seed: int) -> dict[str, np.ndarray]:
    """Per subset, the indices of at most ``max_per_subset`` samples (sorted), drawn with ``seed``: real
    and fake in equal parts where both have enough, the rest from the other class, all of a small subset."""
    rng = np.random.default_rng(seed)
    by_subset: dict[str, tuple[list[int], list[int]]] = {}
    for i, s in enumerate(samples):
        by_subset.setdefault(s.subset, ([], []))[s.label].append(i)
    picked = {}
    for name, (real, fake) in sorted(by_subset.items()):
        take_real = min(len(real), max(max_per_subset // 2, max_per_subset - len(fake)))
        take_fake = min(len(fake), max_per_subset - take_real)
        chosen = [rng.choice(indices, size=k, replace=False) for indices, k in ((real, take_real), (fake, take_fake))]
        picked[name] = np.sort(np.concatenate(chosen).astype(int))
    return picked


def embed(
    samples: Sequence[Sample],
    detector: Detector,
    options: EvalOptions = EvalOptions(),
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The pooled embeddings (n, D) of ``samples`` and which of them are there: read, and finite."""
    out: np.ndarray | None = None
    for read, tensor in read_batches(samples, detector, Perturbation(), options, progress):
        e = detector.embeddings(tensor).cpu().numpy()
        if out is None:
            out = np.full((len(samples), e.shape[1]), np.nan, np.float32)
        out[[p.index for p in read]] = e
    if out is None:  # nothing could be read
        return np.zeros((len(samples), 0), np.float32), np.zeros(len(samples), bool)
    return out, np.isfinite(out).all(axis=1)


PCA_DIMS = 50  # scikit-learn's advice for t-SNE on dense data: reduce to about 50 dimensions first


def tsne(points: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE of ``points`` (scikit-learn): first PCA to at most 50 dimensions, then t-SNE from a PCA
    start, perplexity at most 30 and below a third of n."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    dims = min(PCA_DIMS, len(points), points.shape[1])
    if dims < points.shape[1]:
        points = PCA(n_components=dims, random_state=seed).fit_transform(points)
    perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def embedding_maps(
    dataset: Dataset,
    detector: Detector,
    options: EvalOptions = EvalOptions(),
    max_per_subset: int = 1000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[EmbeddingMap]:
    """The t-SNE maps of each subset with at least MIN_POINTS readable images, and of all subsets together
    (when there are several); a subset with fewer has no map."""
    picked = pick(dataset.samples, max_per_subset, seed)
    chosen = np.concatenate(list(picked.values())) if picked else np.zeros(0, int)
    vectors, there = embed([dataset.samples[i] for i in chosen], detector, options, progress)
    row = {int(i): r for r, i in enumerate(chosen)}
    wanted = list(picked.items())
    if len(picked) > 1:  # with one subset, its own map is the map of all
        together = np.sort(chosen)
        if len(together) > ALL_MAX:
            together = np.sort(np.random.default_rng(seed).choice(together, size=ALL_MAX, replace=False))
        wanted.append((ALL, together))
    maps = []
    for name, indices in wanted:
        readable = np.array([i for i in indices if there[row[int(i)]]], dtype=int)
        if len(readable) < MIN_POINTS:
            continue
        total = len(dataset.samples) if name == ALL else sum(s.subset == name for s in dataset.samples)
        xy = tsne(vectors[[row[int(i)] for i in readable]].astype(np.float64), seed)
        maps.append(EmbeddingMap(name, readable, xy, total))
    return maps


def write_embedding_maps(maps: Sequence[EmbeddingMap], dataset: Dataset, out_dir: Path) -> list[Path]:
    """Per map: ``tsne_<subset>.png`` (real blue, fake red) and ``tsne_<subset>.csv`` (path, subset, label
    (1 = fake), x, y), names written as predictions.csv writes them; ``tsne.png``/``tsne.csv`` for the
    map of all subsets (no subset's name can give that stem)."""
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for m in maps:
        stem = "tsne" if m.subset == ALL else f"tsne_{safe_name(m.subset)}"
        labels = np.array([dataset.samples[i].label for i in m.indices])
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
        for label, name, color in ((0, "real", "tab:blue"), (1, "fake", "tab:red")):
            xy = m.xy[labels == label]
            ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.7, color=color, label=f"{name} ({len(xy)})")
        ax.set(title=f"t-SNE · {m.subset} · {len(m.indices)} of {m.of} images", xticks=[], yticks=[])
        ax.legend(fontsize=7, markerscale=2)
        fig.tight_layout()
        png, table = out_dir / f"{stem}.png", out_dir / f"{stem}.csv"
        fig.savefig(png, dpi=100)
        with open(table, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "subset", "label", "x", "y"])
            for i, (x, y) in zip(m.indices, m.xy):
                s = dataset.samples[i]
                writer.writerow([cell(s.path), cell(s.subset), s.label, repr(float(x)), repr(float(y))])
        written += [png, table]
    return written
