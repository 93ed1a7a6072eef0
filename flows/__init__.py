"""Prefect flows that orchestrate search rounds (the ``nas-search`` flow)."""
