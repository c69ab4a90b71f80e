"""Chat JSONL: every bad line is a 400 naming it; loss falls on assistant turns only."""

from __future__ import annotations

import json

import pytest
from tests.jobs.finetune.conftest import TOY, chat_line, jsonl

from alize.errors import InvalidRequestError
from alize.jobs.finetune.base import LoadedBase
from alize.jobs.finetune.dataset import IGNORE, parse_chat_jsonl, split_validation, tokenize, tokenize_all

GOOD = json.dumps(chat_line("hi", "hello"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"messages": []}', "non-empty 'messages' list"),
        ('["a"]', "non-empty 'messages' list"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant message"),
        ('{"messages": [{"role": "wizard", "content": "hi"}]}', "role must be one of"),
        ('{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}', "content"),
        (
            '{"messages": [{"role": "user", "content": "a"},'
            ' {"role": "assistant", "content": "b", "weight": 2}]}',
            "weight must be 0 or 1",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"},'
            ' {"role": "assistant", "content": "b", "weight": 0}]}',
            "no assistant message",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},'
            ' {"role": "user", "content": "c"}]}',
            "must end with an assistant message",
        ),
    ],
)
def test_a_bad_line_is_a_400_naming_it(line: str, message: str) -> None:
    data = f"{GOOD}\n\n{GOOD}\n{line}\n{GOOD}\n".encode()
    with pytest.raises(InvalidRequestError) as caught:
        parse_chat_jsonl(data, what="training_file")
    assert caught.value.status_code == 400
    assert caught.value.param == "training_file"
    assert caught.value.message.startswith("training_file line 4: ")
    assert message in caught.value.message


def test_invalid_utf8_and_empty_files_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="line 2: is not valid UTF-8"):
        parse_chat_jsonl(GOOD.encode() + b"\n\xff\xfe\n")
    with pytest.raises(InvalidRequestError, match="has no examples"):
        parse_chat_jsonl(b"\n  \n")
    with pytest.raises(InvalidRequestError, match="line 3: more than 2 examples"):
        parse_chat_jsonl(jsonl([chat_line("a", "b")] * 3), max_examples=2)


def test_only_assistant_turns_are_targets(tiny_base: LoadedBase) -> None:
    line = {
        "messages": [
            {"role": "system", "content": "route"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "context only", "weight": 0},
            {"role": "user", "content": "second"},
            {"role": "assistant", "content": "learned"},
        ]
    }
    (conversation,) = parse_chat_jsonl(jsonl([line]))
    example = tokenize(tiny_base.tokenizer, conversation, seq_len=512, what="training_file")
    learned = [t for t in example.labels if t != IGNORE]
    assert tiny_base.tokenizer.decode(learned) == "learned<|im_end|>\n"
    assert example.target_tokens == len(learned)
    assert len(example.input_ids) == len(example.labels)


def test_a_sequence_over_the_limit_names_its_line(tiny_base: LoadedBase) -> None:
    lines = [chat_line("short", "ok"), chat_line("long " * 200, "ok")]
    conversations = parse_chat_jsonl(jsonl(lines), what="validation_file")
    with pytest.raises(
        InvalidRequestError, match=r"validation_file line 2: is \d+ tokens long, over the limit of 64"
    ):
        tokenize_all(tiny_base.tokenizer, conversations, seq_len=64, what="validation_file")


def test_the_validation_split_is_seeded(tiny_base: LoadedBase) -> None:
    examples = tokenize_all(tiny_base.tokenizer, parse_chat_jsonl(jsonl(TOY)), seq_len=512, what="t")
    train, valid = split_validation(examples, 0.25, seed=7)
    again = split_validation(examples, 0.25, seed=7)
    assert (train, valid) == again and len(valid) == 3 and len(train) == 9
    assert {e.line for e in train}.isdisjoint({e.line for e in valid})
    assert split_validation(examples, 0.25, seed=8)[1] != valid
