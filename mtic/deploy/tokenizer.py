"""A torch-free tokenizer with the slice of the Hugging Face call interface mtic's encoders use.

transformers imports torch, which would triple the service's memory; the `tokenizers` library reads the same
tokenizer.json and, with the same truncation settings, gives the same ids (tests/test_deploy_export.py checks it
against the training tokenizer). `ClassificationEncoder` and the selector call it exactly like an HF tokenizer.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer


class FastTokenizer:
    """`tok(text, [pair], truncation=True, max_length=N)["input_ids"]`, honouring `truncation_side`."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: tokenizer file missing (the export needs a fast tokenizer's tokenizer.json)")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as err:  # noqa: BLE001 - tokenizers raises a bare Exception for damaged files
            from mtic.models.checkpoint_io import ArtifactError, one_line

            raise ArtifactError(path, f"not a readable tokenizer.json ({one_line(err)}); the export is damaged: "
                                      "export again") from None
        self._tok.no_padding()  # some tokenizer.json files carry a fixed padding length
        self._tok.no_truncation()
        config = path.parent / "tokenizer_config.json"  # the HF tokenizer's saved default side, if any
        saved = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
        self.truncation_side = saved.get("truncation_side") or "right"
        self._truncation: tuple[int, str] | None = None

    def _configure(self, truncation: bool, max_length: int | None) -> None:
        wanted = (int(max_length), self.truncation_side) if truncation and max_length else None
        if wanted != self._truncation:
            if wanted is None:
                self._tok.no_truncation()
            else:
                self._tok.enable_truncation(wanted[0], strategy="longest_first", direction=wanted[1])
            self._truncation = wanted

    def __call__(self, text: str | list[str], pair: str | list[str] | None = None, truncation: bool = False,
                 max_length: int | None = None, **_: Any) -> dict[str, Any]:
        """Ids of one text (or pair); lists of texts (and pairs) give lists of id lists."""
        self._configure(truncation, max_length)
        if isinstance(text, str):
            enc = self._tok.encode(text, pair) if pair is not None else self._tok.encode(text)
            return {"input_ids": enc.ids, "attention_mask": enc.attention_mask}
        inputs = list(zip(text, pair)) if pair is not None else list(text)
        encs = self._tok.encode_batch(inputs)
        return {"input_ids": [e.ids for e in encs], "attention_mask": [e.attention_mask for e in encs]}
