"""Passing a key/value cache to a Hugging Face causal LM across transformers versions.

transformers 5.x renamed the forward argument `past_key_values` to `cache` (the old name is deprecated and
due to be removed); older 5.x releases only know the old one. Both helpers pick whichever the model takes.
"""
from __future__ import annotations

import copy
import functools
import inspect
from typing import Any

import torch


@functools.cache
def _cache_argument(forward_class: type) -> str:
    parameters = inspect.signature(forward_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def with_cache(model: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """Keyword arguments that hand `cache` to `model.forward` under the name this transformers version uses."""
    unwrapped = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wrappers take **kwargs
    return {_cache_argument(type(unwrapped)): cache}


def cache_of(output: Any) -> Any:
    """The key/value cache of a forward output (`cache` or the older `past_key_values`)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def select_rows(cache: Any, rows: torch.Tensor) -> Any:
    """A cache holding only `rows` of `cache` (batch order as given); `cache` itself is left untouched.

    Layer objects are copied shallowly and re-indexed, so the new cache shares no storage that a later update
    could write into; caches without per-layer objects are deep-copied.
    """
    if hasattr(cache, "layers"):
        selected = copy.copy(cache)
        selected.layers = [copy.copy(layer) for layer in cache.layers]
    else:
        selected = copy.deepcopy(cache)
    selected.batch_select_indices(rows)
    return selected
