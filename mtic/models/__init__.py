"""Models: backbones registry, symbol tuning, hierarchical classifiers."""
