"""Event-sourced neural architecture search: Auto-Keras' Bayesian network morphism, replayable.

Layers, imports pointing down only: ``drivers`` (and ``flows/``, Prefect) -> ``tracking`` (MLflow) and
``training`` (Keras) -> ``report`` -> ``ledger`` -> ``strategy`` -> ``architectures``; ``data`` stands alone.
"""

__version__ = "0.2.0"
