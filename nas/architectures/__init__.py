"""Architectures: the network graph (``graph``), where searches start (``initial``), weights beside the graph
(``weights``), function-preserving morphisms (``morphisms``) and the edit distance between networks
(``edit_distance``). numpy and scipy only."""
