"""Image argument checks that mutation testing (benchmarks/mutation.py arguments) found without a failing
test: one misaligned side, the smallest side allowed, the seed's range, and the one-line refusals naming
the model and what it accepts. Pure functions: no catalog is needed for these rules."""

from __future__ import annotations

from typing import Any

import pytest

from alltoken_mcp.tools.media_args import (
    DEFAULT_SIZE_RULE,
    IMAGE_PROMPT_MAX,
    IMAGE_SEED_MAX,
    ArgumentProblem,
    image_body,
    image_size_rule,
    video_body,
)
from tests.test_media_args import first, hand_built, image_args, problem_text, video_args


def refusal(**overrides: Any) -> str:
    with pytest.raises(ArgumentProblem) as caught:
        image_body(**image_args([], **overrides))
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("size", ["1024x1000", "1000x1024"])
def test_one_side_off_the_16_pixel_grid_is_enough_to_refuse_a_size(size: str) -> None:
    assert "both sides must be multiples of 16" in refusal(size=size)


def test_the_smallest_side_allowed_is_accepted_and_one_step_below_is_not() -> None:
    body, _ = image_body(**image_args([], size="256x512"))
    assert body["size"] == "256x512"
    assert "each side must be at least 256" in refusal(size="240x480")


@pytest.mark.parametrize("seed", [0, IMAGE_SEED_MAX])
def test_a_seed_at_either_end_of_its_range_is_sent(seed: int) -> None:
    body, _ = image_body(**image_args([], model="wan2.7-image", seed=seed))
    assert body["seed"] == seed


@pytest.mark.parametrize("seed", [-1, IMAGE_SEED_MAX + 1, True])
def test_a_seed_outside_its_range_is_refused(seed: int) -> None:
    assert refusal(seed=seed) == f"seed={seed} is out of range: use an integer 0–{IMAGE_SEED_MAX}."


def test_a_refused_choice_names_the_model_and_every_allowed_value() -> None:
    assert refusal(quality="ultra") == (
        "quality='ultra' is not allowed for gpt-image-2: use one of auto, low, medium, high."
    )


def test_a_prompt_too_long_names_the_model_and_its_limit() -> None:
    prompt = "x" * (IMAGE_PROMPT_MAX + 1)
    assert refusal(prompt=prompt) == (
        f"prompt is {IMAGE_PROMPT_MAX + 1} characters; gpt-image-2 accepts at most {IMAGE_PROMPT_MAX}. "
        "Shorten it."
    )
    assert refusal(prompt="  ") == "prompt is empty: describe what to generate."


def test_the_accepted_sizes_are_described_in_full() -> None:
    assert image_size_rule("gpt-image-2").describe() == (
        '"auto" or WIDTHxHEIGHT, both sides multiples of 16, each side at least 256, at most 3840x2160 '
        "(or 2160x3840), aspect ratio between 1:3 and 3:1"
    )
    assert DEFAULT_SIZE_RULE.describe() == (
        '"auto" or WIDTHxHEIGHT, each side at least 256, at most 4096x4096, aspect ratio between 1:8 and 8:1'
    )


def test_a_model_that_needs_an_input_image_refuses_a_call_with_none() -> None:
    # Published as taking text too, but at least one image: the count is the rule that catches it.
    needs_one = hand_built(
        "acme-needs-one",
        input_types=["text", "image_first_frame"],
        content={"image_count": {"min": 1, "max": 1}, "allowed_roles": None},
    )
    text = problem_text(video_body, **video_args([needs_one], model="acme-needs-one"))
    assert "acme-needs-one takes 1–1 input images; 0 were given." in text
    body, _ = video_body(**video_args([needs_one], model="acme-needs-one", frames=[first()]))
    assert [item["role"] for item in body["content"] if item.get("type") == "image_url"] == ["first_frame"]
