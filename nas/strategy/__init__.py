"""The search strategy: search spaces (``space``, ``nb201``), the kernel and Gaussian process (``kernel``, ``gp``),
the acquisition and its optimiser (``acquisition``), what proposers read and return (``proposals``), one module
per strategy (``bayesian``, ``random_walk``, ``evolution``) and their registry (``strategies``). numpy and scipy
only; proposers hold no history: they read it from the ledger's state on every call."""
