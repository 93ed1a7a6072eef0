"""Event-sourced neural architecture search: Auto-Keras' Bayesian network morphism, replayable.

Layers, imports pointing down only: ``cli`` (the ``nas`` command) -> ``flows/`` (Prefect) -> ``drivers`` ->
``tracking`` (MLflow) -> ``training`` (Keras) -> ``report`` -> ``ledger`` -> ``strategy`` -> ``architectures``
-> ``data``.
"""

__version__ = "0.3.0"
