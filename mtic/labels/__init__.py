"""Labels: target kinds (original / compressed / symbolic / summary), label compression, output -> intent matching.

Depends on `mtic.data` only; embedders and LLMs are passed in as callables.
"""
from mtic.labels.chooser import PROPOSERS, LabelChooser
from mtic.labels.compress import (
    DEFAULT_ALPHA,
    CompressionChoice,
    CompressionFileError,
    HashedEmbedder,
    compress_labels,
    extractive_candidates,
    load_compression,
    save_compression,
    word_count,
)
from mtic.labels.matching import MATCH_METHODS, MatchResult, OutputMatcher, output_matcher, unmatched_rate
from mtic.labels.targets import (
    SYMBOL_STYLES,
    TARGET_KINDS,
    LabelSet,
    LabelSetError,
    TargetKind,
    parse_summary_answer,
    symbolic_labels,
)
from mtic.labels.text import ANSWER_PREFIX, SUMMARY_TEMPLATE, normalize_text

__all__ = [
    "ANSWER_PREFIX",
    "DEFAULT_ALPHA",
    "MATCH_METHODS",
    "PROPOSERS",
    "SUMMARY_TEMPLATE",
    "SYMBOL_STYLES",
    "TARGET_KINDS",
    "CompressionChoice",
    "CompressionFileError",
    "HashedEmbedder",
    "LabelChooser",
    "LabelSet",
    "LabelSetError",
    "MatchResult",
    "OutputMatcher",
    "TargetKind",
    "compress_labels",
    "extractive_candidates",
    "load_compression",
    "normalize_text",
    "output_matcher",
    "parse_summary_answer",
    "save_compression",
    "symbolic_labels",
    "unmatched_rate",
    "word_count",
]
