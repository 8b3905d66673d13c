"""patternfind: classic pattern detection with hand-crafted and learned filters."""

from patternfind.structures import Box, Detection, Filter

__version__ = "0.1.0"

__all__ = ["Box", "Detection", "Filter", "__version__"]
