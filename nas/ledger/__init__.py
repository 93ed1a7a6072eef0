"""The ledger: events (``events``), the state as a fold over them (``state``), the hash-chained event log and
its ports (``log``, ``ports``, the in-memory backend ``memory``), the ask/tell service (``service``), replay
(``replay``) and the backend-neutral audit (``audit``). Imports neither Keras nor MLflow nor Prefect."""
