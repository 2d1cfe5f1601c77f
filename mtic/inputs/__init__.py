"""Model inputs: how a bundle's sessions become what a model reads.

`views` renders a session as text (last query, concatenations, transcript, chat), `encoding` tokenises a view,
`chat` builds chat-template rows for causal LMs, and `datamodule` is the one LightningDataModule that serves them to
every classifier; `pairs` serves the selective-concatenation selector its (history, last query) pairs.
"""
