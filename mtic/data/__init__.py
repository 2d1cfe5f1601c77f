"""The on-disk bundle format: schema (Intent, Session, Turn), bundle reader/validator/writer, Taxonomy, bundle
errors, the build-once cache, statistics, and resolving a config spec (`demo:sg`, `sgd:`, a path) to a bundle.

Bundles are written by `mtic.dataset_factories` and read for models by `mtic.inputs`.
"""
