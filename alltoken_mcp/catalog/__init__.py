"""AllToken's model catalog, outside the MCP layer: the merged listings, cached (`Catalog`), and the one
answer to "what does this video model accept" (`VideoRules`) and "what is this image model taken for"
(`ImageOperations`: generation, edits, variations).

```python
catalog = Catalog(store, client, ttl=CatalogTTL())
view = await catalog.snapshot(refresh=False)     # CatalogView: models, stale, warnings
await catalog.models("video", expecting="seedance-2.0")   # list[ModelEntry]
await catalog.video_rules("seedance-2.5")        # VideoRules
```
"""

from alltoken_mcp.catalog.image_ops import ImageOperation, ImageOperations, image_operations
from alltoken_mcp.catalog.listing import (
    SEARCH_FAMILIES,
    Capability,
    Modality,
    ModelEntry,
    filter_models,
    find_model,
    image_models_for,
    merge_listings,
)
from alltoken_mcp.catalog.rules import (
    INPUT_TYPE_LABELS,
    VIDEO_OPTIONS,
    WIRE_RATIOS,
    WIRE_RESOLUTIONS,
    CountLimit,
    DurationRule,
    VideoRules,
    inputs_text,
    video_rules,
)
from alltoken_mcp.catalog.service import (
    Catalog,
    CatalogSnapshot,
    CatalogTTL,
    CatalogView,
    video_rules_of,
)

__all__ = [
    "INPUT_TYPE_LABELS",
    "SEARCH_FAMILIES",
    "VIDEO_OPTIONS",
    "WIRE_RATIOS",
    "WIRE_RESOLUTIONS",
    "Capability",
    "Catalog",
    "CatalogSnapshot",
    "CatalogTTL",
    "CatalogView",
    "CountLimit",
    "DurationRule",
    "ImageOperation",
    "ImageOperations",
    "Modality",
    "ModelEntry",
    "VideoRules",
    "filter_models",
    "find_model",
    "image_models_for",
    "image_operations",
    "inputs_text",
    "merge_listings",
    "video_rules",
    "video_rules_of",
]
