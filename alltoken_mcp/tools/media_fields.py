"""What the media tools' signatures share: the argument fields of waiting and saving, and the
annotations of a tool that starts a paid render."""

from __future__ import annotations

import mcp_types as t
from pydantic import Field

WAIT_FIELD = Field(ge=0, allow_inf_nan=False)
SAVE_TO_FIELD = Field(
    min_length=1,
    max_length=4096,
    description="file or dir inside the client's roots, input dirs or output dir",
)
OVERWRITE_FIELD = Field(description="replace an existing save_to file")
PREVIEW_FIELD = Field(description="inline a small preview")


def generating_annotations(title: str) -> t.ToolAnnotations:
    """A tool that starts a new, paid render on AllToken each time it is called."""
    return t.ToolAnnotations(
        title=title, read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
    )
