"""Safety score step: classifier prediction, a precomputed label, or the max of both (paper)."""

from __future__ import annotations

from collections import Counter

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from datagen.steps.counting import flush_counts


class SafetyScorer(PipelineStep):
    """Set ``metadata["safety_score"]`` (0-5) on every document.

    Args:
        classifier: classifier folder (``classifier.json``), or None to use labels only.
        label_field: metadata field with a precomputed label (an LLM rubric score), used when present.
        combine: ``max`` of classifier and label when a label exists (else the classifier),
            ``classifier`` only (the label field is not read), or ``label`` only (documents without a
            valid label then raise). Each document's ``score_decided_by`` (classifier, label, or agree:
            both gave the same score) is counted as ``decided_by_<which>``.
        batch_size: documents per classifier call.
    """

    name = "🛡 Safety score"
    type = "🔢 - SCORER"

    def __init__(self, classifier: str | None, label_field: str = "score", combine: str = "max", batch_size: int = 256):
        super().__init__()
        if combine not in ("max", "classifier", "label"):
            raise ValueError(f"combine must be max, classifier or label, got {combine!r}")
        if classifier is None and combine != "label":
            raise ValueError("a classifier folder is needed unless combine='label'")
        self.classifier_path = classifier
        self.label_field = label_field
        self.combine = combine
        self.batch_size = batch_size
        self._clf = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_clf"] = None
        return state

    def _label(self, doc) -> int | None:
        v = doc.metadata.get(self.label_field)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 5:
            return None
        return v

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if self.combine != "label" and self._clf is None:
            from datagen.classifier import load_classifier

            self._clf = load_classifier(self.classifier_path)
        counts: Counter = Counter()
        try:
            yield from self._score(data, counts)
        finally:
            flush_counts(self, counts)

    def _score(self, data, counts: Counter):
        for batch in batched(data, self.batch_size):
            with self.track_time("batch"):
                preds = self._clf.predict([d.text for d in batch]) if self.combine != "label" else [None] * len(batch)
            for doc, pred in zip(batch, preds):
                label = self._label(doc) if self.combine != "classifier" else None
                if self.combine == "label":
                    if label is None:
                        raise ValueError(
                            f"{doc.metadata.get('source')}:{doc.metadata.get('line')}: document "
                            f"{doc.id} has no valid '{self.label_field}' (0-5) and score.combine=label"
                        )
                    score, decided = label, "label"
                elif label is None:
                    score, decided = pred, "classifier"
                else:  # max: the higher one decides; equal scores are counted as agreeing
                    score = max(pred, label)
                    decided = "agree" if pred == label else "label" if label > pred else "classifier"
                doc.metadata["classifier_score"] = pred
                doc.metadata["safety_score"] = int(score)
                doc.metadata["score_decided_by"] = decided
                counts[f"score_{score}"] += 1
                counts[f"decided_by_{decided}"] += 1
                if label is not None:
                    counts["with_label"] += 1
                yield doc
