"""`forensix eval` as a library: every pass of a detector (and a localizer, an attributor) over a dataset."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..cache import PredictionCache, model_key
from ..datasets import Dataset
from ..detector import Detector
from ..provenance import provenance
from .perturbations import Perturbation
from .predict import EvalOptions, Predictions, attribute, localize, predict
from .tables import EvalResult, attribution_table, localization_mean, localization_metrics, table_for

if TYPE_CHECKING:
    from ..attributor import Attributor
    from ..localizer import Localizer


def evaluate(
    dataset: Dataset,
    detector: Detector,
    perturbations: Sequence[Perturbation] = (Perturbation(),),
    options: EvalOptions = EvalOptions(),
    cache: PredictionCache | None = None,
    progress: Callable[[int], None] | None = None,
    localizer: Localizer | None = None,
    attributor: Attributor | None = None,
) -> EvalResult:
    """One table per perturbation (in the order given) of the detector on the dataset.

    With a ``localizer``, the samples that have a mask are also scored for localization; with an
    ``attributor``, every sample for source attribution.
    """
    masked = [s for s in dataset.samples if s.mask is not None] if localizer is not None else []
    tables = []
    clean: Predictions | None = None
    for p in perturbations:
        predictions = predict(dataset.samples, detector, p, options, cache, progress)
        if p.kind == "none":
            clean = predictions
        reference = clean if p.kind != "none" else None
        table = table_for(
            dataset, predictions, p, detector.threshold, detector.temperature, reference, detector.band_low
        )
        if localizer is not None and masked:
            scores = localize(masked, localizer, dataset.masks_inverted, p, options, progress)
            names = [s.subset for s in masked]
            table.localization = [
                localization_metrics([sc for sc, n in zip(scores, names) if n == name], name)
                for name in sorted(set(names))
            ]
            table.localization_mean = localization_mean(table.localization)
        if attributor is not None:
            probs = attribute(dataset.samples, attributor, p, options, progress)
            table.attribution = attribution_table(dataset.samples, probs, attributor.classes)
        tables.append(table)
    record = provenance(detector, localizer, attributor, model_key=model_key(detector), batch_size=options.batch_size)
    return EvalResult(
        detector.name, detector.threshold, detector.temperature, dataset, tables, record, detector.band_low
    )
