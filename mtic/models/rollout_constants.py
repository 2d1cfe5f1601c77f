"""The session rollout's value lists, importable without torch (config validation reads them);
mtic.models.rollout re-exports them."""
from __future__ import annotations

GREEDY, SCORE = "greedy", "score"
DECODES = (GREEDY, SCORE)           # how an answer is read off the cache (`model.decode`)
ROLLOUT, GOLD, NO_HISTORY = "rollout", "gold", "none"
HISTORIES = (ROLLOUT, GOLD, NO_HISTORY)  # what answers the history turns (`model.history`)
