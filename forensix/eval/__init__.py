"""`forensix eval`: detection metrics per subset, under perturbations, with cached predictions.

One module per job: ``perturbations`` (what degrades the decoded image), ``predict`` (logits
through the scan's stages, cached), ``detection`` (one subset's metrics), ``tables`` (per-subset
tables of a pass: detection, localization, attribution), ``run`` (:func:`evaluate`: every pass),
``outputs`` (metrics.json/.csv/.md, predictions.csv, terminal rows), ``plots`` and ``embeddings``
(``--embeddings``: t-SNE maps of the embedding the head scores).

Metrics follow the field's tables (UnivFD, DeeCLIP): per subset the accuracy on real images, on
fake images and on both at the model's threshold, average precision, ROC-AUC, and the accuracy at
the best threshold for that subset (an oracle figure); the mean row is their plain mean over
subsets (mAcc, mAP). They are computed with scikit-learn from scores made exactly as ``forensix
scan`` makes them (float32 ``sigmoid(logit / temperature)``, fake when ``score >= threshold``).

Perturbations act on the decoded image before the model's preprocessing, as a user's image
would arrive: JPEG re-encoding, bicubic rescaling, Gaussian blur. Raw logits are cached by (image
sha256, model, perturbation) in a SQLite file, so a repeated eval, or a calibration after an eval,
scores nothing twice.
"""

from .detection import DetectionMetrics, detection_metrics, expected_calibration_error, mean_row
from .embeddings import embedding_maps, write_embedding_maps
from .outputs import (
    ATTRIBUTION_COLUMNS,
    LOCALIZATION_COLUMNS,
    attribution_rows,
    confusion_rows,
    localization_rows,
    table_rows,
    write_outputs,
)
from .perturbations import PERTURBATIONS, Perturbation, parse_perturbations
from .predict import EvalOptions, Predictions, attribute, localize, predict, scores_from_logits
from .run import evaluate
from .tables import EvalResult, PerturbationResult

__all__ = [
    "ATTRIBUTION_COLUMNS",
    "LOCALIZATION_COLUMNS",
    "PERTURBATIONS",
    "DetectionMetrics",
    "EvalOptions",
    "EvalResult",
    "Perturbation",
    "PerturbationResult",
    "Predictions",
    "attribute",
    "attribution_rows",
    "confusion_rows",
    "detection_metrics",
    "embedding_maps",
    "evaluate",
    "expected_calibration_error",
    "localization_rows",
    "localize",
    "mean_row",
    "parse_perturbations",
    "predict",
    "scores_from_logits",
    "table_rows",
    "write_embedding_maps",
    "write_outputs",
]
