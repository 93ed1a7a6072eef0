"""Event-sourced neural architecture search: Auto-Keras' Bayesian network morphism, replayable."""

__version__ = "0.1.0"
