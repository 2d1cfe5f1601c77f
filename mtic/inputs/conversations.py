"""General-chat conversations as language-model input: the transcript symbol tuning uses, loss on the replies.

A conversation is rendered in a `ChatFormat` (mtic/inputs/chat.py) without the answer prefix, i.e. for
`chat_format=vicuna` exactly Vicuna v1.1's transcript, the format of the paper's ShareGPT pre-training:

    {system} USER: {user 1} ASSISTANT: {reply 1}</s>USER: {user 2} ASSISTANT: {reply 2}</s>...

Only the assistant replies and their end-of-sequence tokens carry loss (the model learns to answer, as symbol
tuning trains it to; user messages in public chat dumps are often pasted text that is no target). Segments are
tokenised one by one through `ChatEncoder.segments`, so the mask never depends on character offsets and the
token boundaries are those symbol tuning sees. Long conversations keep their first `max_length` tokens (the
system prompt and the opening turns); one whose first reply starts beyond that carries no loss and is returned
as None for the caller to count.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mtic.data.chat_corpus import Conversation
from mtic.inputs.chat import ChatEncoder, ChatFormat
from mtic.inputs.encoding import IGNORE_INDEX


@dataclass
class ConversationEncoder:
    """Token ids and reply-only labels of one conversation in `fmt` (its answer prefix is not used)."""

    tokenizer: Any
    fmt: ChatFormat
    max_length: int = 512

    def transcript(self, conversation: Conversation) -> ChatEncoder:
        """The chat encoder of this conversation: the format, with the conversation's own system prompt if any."""
        fmt = replace(self.fmt, answer_prefix="", system_prompt=conversation.system or self.fmt.system_prompt)
        return ChatEncoder(self.tokenizer, label_of=str, fmt=fmt, loss_on="all", max_length=self.max_length)

    def __call__(self, conversation: Conversation) -> dict[str, Any] | None:
        input_ids: list[int] = []
        labels: list[int] = []
        for ids, is_reply in self.transcript(conversation).segments(conversation.turns):
            input_ids += ids
            labels += ids if is_reply else [IGNORE_INDEX] * len(ids)
        input_ids, labels = input_ids[: self.max_length], labels[: self.max_length]
        if all(label == IGNORE_INDEX for label in labels[1:]):  # the first label is never a target (shifted loss)
            return None
        return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}
