"""The vicuna-style chat transcript for symbol tuning, tokenised segment by segment with its loss mask."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mtic.inputs.encoding import IGNORE_INDEX
from mtic.inputs.views import ViewExample

LOSS_ON = ("all", "last")


@dataclass(frozen=True)
class ChatFormat:
    """Text of the transcript: `{system} USER: {q} ASSISTANT: {answer_prefix} {label}</s>USER: ...`."""

    system_prompt: str = "A customer chats with a shop assistant, who names the intent title of every query."
    user_tag: str = "USER:"
    assistant_tag: str = "ASSISTANT:"
    answer_prefix: str = "The intent title is"


VICUNA_SYSTEM_PROMPT = ("A chat between a curious user and an artificial intelligence assistant. The assistant "
                        "gives helpful, detailed, and polite answers to the user's questions.")
# Named transcript formats (`model.chat_format=<name>`); a mapping of ChatFormat fields overrides the default one.
CHAT_FORMATS: dict[str, ChatFormat] = {
    "mtic": ChatFormat(),  # a task-specific system prompt: the default of the CPU recipes
    "vicuna": ChatFormat(system_prompt=VICUNA_SYSTEM_PROMPT),  # Vicuna v1.1's own prompt, as the paper trains with
}


def chat_format(value: str | dict | None) -> ChatFormat:
    """The ChatFormat of `model.chat_format`: null = the default, a name of CHAT_FORMATS, or a mapping of fields
    (system_prompt, user_tag, assistant_tag, answer_prefix) over the default."""
    if value is None:
        return ChatFormat()
    if isinstance(value, str):
        if value not in CHAT_FORMATS:
            raise ValueError(f"unknown chat_format {value!r}; choose one of {sorted(CHAT_FORMATS)} or give its fields")
        return CHAT_FORMATS[value]
    return ChatFormat(**dict(value))


@dataclass
class ChatEncoder:
    """Tokenises a chat example; only answer labels (and their end-of-sequence token) carry loss.

    Segments are tokenised separately and concatenated, so the mask never depends on character offsets.
    `label_of(intent_id)` gives the target text of an intent (compressed label, symbol, title...).
    `loss_on='all'` trains on every answer of the session, `'last'` only on the final one.
    `answer_of(queries, intent_id)`, when given, replaces `label_of` for whole answers that depend on the
    conversation so far (`queries` = queries 1..j of turn j; the summary target: "You are asking about ... So, the
    intent title is ...").
    """

    tokenizer: Any
    label_of: Callable[[str], str]
    fmt: ChatFormat = ChatFormat()
    loss_on: str = "all"
    max_length: int = 512
    answer_of: Callable[[Sequence[str], str], str] | None = None

    def __post_init__(self) -> None:
        if self.loss_on not in LOSS_ON:
            raise ValueError(f"loss_on must be one of {list(LOSS_ON)}, got {self.loss_on!r}")
        if self.tokenizer.eos_token_id is None:
            raise ValueError("the chat encoder needs a tokenizer with an end-of-sequence token")

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def start_ids(self) -> list[int]:
        """The tokenizer's own start of text: BOS when its normal encoding begins with it (Gemma, Llama)."""
        bos = self.tokenizer.bos_token_id
        if bos is None:
            return []
        probe = self.tokenizer("a")["input_ids"]
        return [bos] if probe[:1] == [bos] and self._ids("a")[:1] != [bos] else []

    def question(self, query: str, first: bool) -> str:
        """Prompt text of one user turn up to and including the answer prefix."""
        head = f"{self.fmt.system_prompt} " if first else ""
        prefix = f" {self.fmt.answer_prefix}" if self.fmt.answer_prefix else ""
        return f"{head}{self.fmt.user_tag} {query} {self.fmt.assistant_tag}{prefix}"

    def segments(self, turns: Sequence[tuple[str, str | None]]) -> list[tuple[list[int], bool]]:
        """(token ids, carries loss) for every segment of the transcript."""
        out: list[tuple[list[int], bool]] = [(self.start_ids(), False)]
        last = len(turns) - 1
        for k, (query, answer) in enumerate(turns):
            out.append((self.turn_ids(query, first=k == 0, asked=answer is not None or k == last), False))
            if answer is not None:
                out.append((self.answer_ids(answer), self.loss_on == "all" or k == last))
        return out

    def turn_ids(self, query: str, first: bool, asked: bool) -> list[int]:
        """Ids of one user turn: up to the answer prefix when the turn is answered (`asked`), else the query alone."""
        if asked:
            return self._ids(self.question(query, first=first))
        head = f"{self.fmt.system_prompt} " if first else ""
        return self._ids(f"{head}{self.fmt.user_tag} {query} ")

    def answer_ids(self, answer: str) -> list[int]:
        """Ids of one answer as it follows the answer prefix: the label, then end of sequence."""
        return self._ids(f" {answer}") + [self.tokenizer.eos_token_id]

    def __call__(self, example: ViewExample) -> dict[str, Any]:
        answer = self.answer_of or (lambda queries, intent: self.label_of(intent))
        queries = [q for q, _ in example.turns]
        turns = [(q, None if intent is None else answer(queries[: j + 1], intent))
                 for j, (q, intent) in enumerate(example.turns)]
        input_ids: list[int] = []
        labels: list[int] = []
        for ids, trains in self.segments(turns):
            input_ids += ids
            labels += ids if trains else [IGNORE_INDEX] * len(ids)
        if len(input_ids) > self.max_length:  # drop the oldest tokens; the last answer survives
            input_ids, labels = input_ids[-self.max_length :], labels[-self.max_length :]
        return {
            "input_ids": input_ids,
            "attention_mask": [1] * len(input_ids),
            "labels": labels,
            "session_id": example.session_id,
            "target": example.target,
            "turns": example.turns,
        }

    def prompt_ids(self, queries: Sequence[str], history_answers: Sequence[str | None]) -> list[int]:
        """Ids of the inference prompt: earlier turns with `history_answers`, ending on the answer prefix."""
        turns = list(zip(queries[:-1], history_answers)) + [(queries[-1], None)]
        ids = [i for seg, _ in self.segments(turns) for i in seg]
        return ids[-self.max_length :]


def rollout_row(example: ViewExample) -> dict[str, Any]:
    """A test row of the symbol-tuned LM: the session's turns, not tokenised. The rollout tokenises its own prompts
    turn by turn (with its own history answers), so a test transcript is tokenised once, there."""
    return {"session_id": example.session_id, "target": example.target, "turns": example.turns}
