"""Models: symbol tuning, hierarchical classifiers, selector (backbones come from mtic.hub)."""
