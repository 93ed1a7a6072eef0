"""Prefect: the ``nas-search`` flow (``nas_search``), how it trains (``trainings``: tasks, or the deployed
``nas-train`` flow on workers), and what its runs show in the Prefect UI (``story``). The only package that
imports Prefect."""
