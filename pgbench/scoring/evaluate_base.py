"""Shared `evaluate.Metric` behaviour for the modules in `metrics/`.

`compute(predictions=..., references=...)` validates and scores the Python lists directly:
round-tripping hundreds of thousands of strings through an Arrow cache file only costs time,
and masks of different sizes or lists of box dicts do not fit Arrow features at all. The
result is the one `_compute` gives on the same lists. The `add_batch`-then-`compute()` path
and multi-process evaluation still go through evaluate's own machinery for the text metrics.
"""

from __future__ import annotations

import datasets
import evaluate

from pgbench.errors import InputError

TEXT_FEATURES = datasets.Features({
    "predictions": datasets.Value("string"),
    "references": datasets.Sequence(datasets.Value("string")),
})


class DirectMetric(evaluate.Metric):
    """An evaluate.Metric whose one-shot `compute` skips the Arrow round trip."""

    # Subclasses that cannot be stored in Arrow (masks, boxes) set this to False.
    supports_add_batch = True

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Score all examples at once; keyword arguments as described below.
"""
        accumulated = getattr(self, "writer", None) is not None or getattr(self, "buf_writer", None) is not None
        if (predictions is None and references is None) or accumulated or self.num_process > 1:
            if not self.supports_add_batch:
                raise InputError(f"{self.name}: pass predictions= and references= to compute(); "
                                 "add_batch/multi-process accumulation is not supported for this metric")
            return super().compute(predictions=predictions, references=references, **kwargs)
        return self._compute(predictions=predictions, references=references, **kwargs)

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Accumulate a batch (text metrics only).\n"""
        if not self.supports_add_batch:
            raise InputError(f"{self.name}: add_batch is not supported; pass all examples to compute()")
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Accumulate one example (text metrics only).\n"""
        if not self.supports_add_batch:
            raise InputError(f"{self.name}: add is not supported; pass all examples to compute()")
        return super().add(prediction=prediction, reference=reference, **kwargs)
