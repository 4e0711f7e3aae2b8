"""Input variants from 'Fantastic Semantics' (arXiv 2403.01509): how a sentence is fed to the model
and which tokens carry the target word's representation."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import LayerprobeError
from pipeline.readers.base import Example

PROMPT_PREFIX = 'In this sentence: "'
PROMPT_TEMPLATE = PROMPT_PREFIX + '{sentence}", the word "{word}" means in one word: "'


@dataclass(frozen=True)
class ModelInput:
    """The text the model reads, and where the sentence's own words and target sit inside it."""

    text: str
    word_spans: tuple[tuple[int, int], ...]   # the example's words, as offsets into `text`
    target_span: tuple[int, int] | None       # offsets into `text`; None without a target
    target_is_last_token: bool                # prompt variant: the target is the final token


def build_model_input(example: Example, variant: str) -> ModelInput:
    if variant == "base":
        return ModelInput(example.text, example.word_spans, example.target_span, False)
    if variant == "repeat":
        # The sentence twice; the second copy has read the whole sentence once already, so even a
        # causal model's second-copy tokens see full context. Words and target point at copy two.
        shift = len(example.text) + 1
        return ModelInput(
            example.text + " " + example.text,
            _shift(example.word_spans, shift),
            None if example.target_span is None else _shift((example.target_span,), shift)[0],
            False,
        )
    if variant == "prompt":
        if example.target_span is None:
            raise LayerprobeError(
                "the prompt variant needs a target word in every example (WiC data, or "
                "target_start/target_end columns); this source has an example without one"
            )
        text = PROMPT_TEMPLATE.format(sentence=example.text, word=example.target_word)
        shift = len(PROMPT_PREFIX)
        return ModelInput(text, _shift(example.word_spans, shift), None, True)
    raise LayerprobeError(f"unknown variant {variant!r}: expected base, repeat or prompt")


def _shift(spans, by: int):
    return tuple((s + by, e + by) for s, e in spans)
