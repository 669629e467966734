"""Answer shapes the parser must handle; it never raises and never invents a number."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sole_r1_ros.core.answer import ParseStatus, parse_answer

CASES = [
    ("<think>moved closer</think><answer>45%</answer>", 45, ParseStatus.OK, "moved closer"),
    ("<think>a</think><answer>45</answer>", 45, ParseStatus.OK, "a"),
    ("<think>a</think><answer> 7 % </answer>", 7, ParseStatus.OK, "a"),
    ("<think>worse</think><answer>-20%</answer>", -20, ParseStatus.OK, "worse"),
    ("<think>x</think><answer>+30%</answer>", 30, ParseStatus.OK, "x"),
    ("<think>x</think><answer>150%</answer>", 100, ParseStatus.CLIPPED, "x"),
    ("<think>x</think><answer>-250%</answer>", -100, ParseStatus.CLIPPED, "x"),
    ("<think>x</think><answer>45%</answer", 45, ParseStatus.OK, "x"),  # truncated closing tag
    ("<think>x</think><answer>45%", 45, ParseStatus.OK, "x"),  # no closing tag, but the % ends the number
    ("<think>x</think><answer>4", None, ParseStatus.TRUNCATED, "x"),  # cut on its way to 45%
    ("<think>x</think><answer>100100", None, ParseStatus.TRUNCATED, "x"),
    ("<think>x</think><answer>", None, ParseStatus.TRUNCATED, "x"),
    ("<think>x</think><answer>45.", None, ParseStatus.TRUNCATED, "x"),
    ("<think>x</think><answer>45</answer", 45, ParseStatus.OK, "x"),  # missing '>' only: tolerated
    ("<think>x</think><answer>62.6%</answer>", 63, ParseStatus.OK, "x"),
    ("<think>x</think>\n<answer>\n12\n</answer>", 12, ParseStatus.OK, "x"),
    ("<think>multi\nline</think><answer>5%</answer>", 5, ParseStatus.OK, "multi\nline"),
    ("<think>unclosed reasoning <answer>33%</answer>", 33, ParseStatus.OK, "unclosed reasoning"),
    ("no tags at all, maybe 50%", None, ParseStatus.NO_ANSWER, "no tags at all, maybe 50%"),
    ("<think>only thinking, cut off", None, ParseStatus.NO_ANSWER, "only thinking, cut off"),
    ("", None, ParseStatus.NO_ANSWER, ""),
    ("<think>x</think><answer>about half</answer>", None, ParseStatus.INVALID_NUMBER, "x"),
    ("<think>x</think><answer>%</answer>", None, ParseStatus.INVALID_NUMBER, "x"),
    ("<think>x</think><answer>40% or 50%</answer>", None, ParseStatus.INVALID_NUMBER, "x"),
    ("<think>x</think><answer></answer>", None, ParseStatus.INVALID_NUMBER, "x"),
    ("<answer>80%</answer>", 80, ParseStatus.OK, ""),
]


@pytest.mark.parametrize(("text", "percent", "status", "reasoning"), CASES)
def test_answer_shapes(text: str, percent: int | None, status: ParseStatus, reasoning: str) -> None:
    parsed = parse_answer(text)
    assert parsed.percent == percent
    assert parsed.status is status
    assert parsed.reasoning == reasoning
    assert parsed.status.has_value == (percent is not None)


def test_first_answer_tag_wins() -> None:
    assert parse_answer("<answer>10%</answer><answer>90%</answer>").percent == 10


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_never_raises_and_value_in_range(text: str) -> None:
    parsed = parse_answer(text)
    assert (parsed.percent is None) != parsed.status.has_value
    if parsed.percent is not None:
        assert -100 <= parsed.percent <= 100


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=-10_000, max_value=10_000),
    st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=40),
)
def test_round_trip_of_well_formed_answers(value: int, thought: str) -> None:
    parsed = parse_answer(f"<think>{thought}</think><answer>{value}%</answer>")
    assert parsed.percent == max(-100, min(100, value))
    assert parsed.reasoning == thought.strip()


def test_truncated_answers_say_why() -> None:
    cut = parse_answer("<think>x</think><answer>4")
    assert cut.reason == "the reply ends inside <answer>: no '%' and no closing tag"
    at_limit = parse_answer("<think>x</think><answer>45%", hit_token_limit=True)
    assert at_limit.status is ParseStatus.TRUNCATED and at_limit.percent is None
    assert "token limit" in at_limit.reason
    assert parse_answer("<think>x</think><answer>45%</answer>", hit_token_limit=True).percent == 45
    assert parse_answer("<think>x</think><answer>45%</answer", hit_token_limit=True).percent == 45
    assert "token limit" in parse_answer("<think>cut", hit_token_limit=True).reason


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-10_000, max_value=10_000), st.data())
def test_a_cut_reply_never_reads_as_another_number(value: int, data: st.DataObject) -> None:
    """Every prefix of a well-formed reply either fails or reads the reply's own (clipped)
    value: never a number the model did not finish writing (``<answer>4`` of ``45%``)."""
    reply = f"<think>t</think><answer>{value}%</answer>"
    cut = data.draw(st.integers(min_value=0, max_value=len(reply)))
    prefix = reply[:cut]
    for at_limit in (False, True):
        parsed = parse_answer(prefix, hit_token_limit=at_limit)
        assert parsed.percent in (None, max(-100, min(100, value))), (prefix, parsed)
        if at_limit and "</answer" not in prefix:
            assert parsed.percent is None, prefix
        if parsed.percent is None:
            assert parsed.reason


@pytest.mark.parametrize("digits", ["9" * 400, "1" + "0" * 320 + ".5", "٤٥"])
def test_a_huge_or_non_ascii_number_is_invalid_not_an_exception(digits: str) -> None:
    """A repetition loop can write hundreds of digits (float() would overflow in round())."""
    parsed = parse_answer(f"<answer>{digits}%</answer>")
    assert parsed.percent is None and parsed.status is ParseStatus.INVALID_NUMBER
