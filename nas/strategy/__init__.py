"""The search strategy: search spaces (``space``, ``nb201``), the kernel and Gaussian process (``kernel``, ``gp``),
the acquisition and its optimiser (``acquisition``) and the proposers (``proposers``). numpy and scipy only;
proposers hold no history: they read it from the ledger's state on every call."""
