"""The drivers: settings (``config``), the round loop and the plain runner (``runner``), publishing progress
(``publish``), anchors outside the store (``witness``), the DVC stages (``pipeline``), the command line
(``cli``) and ``nas demo`` (``demo``). They reach the store only through ``nas.tracking.open_store``."""
