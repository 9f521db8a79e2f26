"""Which image endpoints take a model — generations, edits, variations: the one answer `list_models`
shows and `alltoken_image` checks before anything is uploaded or paid for.

No listing has a field for it, so it is read from what the listings do publish (alltoken-api.md):
- a generation takes a prompt: the model's `input_modalities` include `text` (§3.2);
- an edit takes a prompt and an image (§4.3): they include `text` and `image` (§3.2's gpt-image-2 entry
  publishes exactly that);
- a variation takes an image and no prompt, and §4.3 names the dall-e-2 models for it, so those vary
  whatever they publish; a model whose inputs are an image and no text does nothing else.
A listing that publishes no `input_modalities` leaves generation and edits unknown (None): the gateway
decides, as for the parts of a video model's rules that nothing describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

ImageOperation = Literal["generation", "edit", "variation"]
VARIATION_MODELS = ("dall-e-2",)
"""§4.3: the models `/images/variations` takes (dated variants such as dall-e-2-2026-01-01 included)."""


class ImageOperations(BaseModel):
    """What an image model is taken for; None: the listing does not say."""

    model_config = ConfigDict(frozen=True)

    generation: bool | None = None
    edit: bool | None = None
    variation: bool = False

    def allows(self, operation: ImageOperation) -> bool | None:
        return {"generation": self.generation, "edit": self.edit, "variation": self.variation}[operation]


def image_operations(model_id: str, input_modalities: Sequence[str]) -> ImageOperations:
    lowered = model_id.lower()
    variation = any(lowered == m or lowered.startswith(m + "-") for m in VARIATION_MODELS)
    inputs = set(input_modalities)
    if not inputs:
        return ImageOperations(variation=variation)
    if "text" not in inputs:
        return ImageOperations(generation=False, edit=False, variation=variation or "image" in inputs)
    return ImageOperations(generation=True, edit="image" in inputs, variation=variation)
