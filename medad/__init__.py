"""medad: zero-shot lesion and anomaly detection for medical images.

The public API is organised by concern: :mod:`medad.data` (datasets and loaders), :mod:`medad.models`
(model registry and ``create_model``), :mod:`medad.engine` (training and batched scoring),
:mod:`medad.metrics`, :mod:`medad.stats`, :mod:`medad.reports`, :mod:`medad.export` and
:mod:`medad.protocols`.
"""

__version__ = "0.1.0"
