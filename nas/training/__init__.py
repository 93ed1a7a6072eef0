"""Training: architecture + weights -> Keras model (``builder``), fitting it (``fit``), and the search's training
step that logs the outcome (``task``). The only package that imports Keras (backend-clean Keras 3)."""

SCHEDULES = ("constant", "cosine")  # a training's learning rate: constant, or cosine decay to 0 over its steps
