"""Batch runs: many images, streamed output, resume, local processes or a Dask cluster.

May import: core, layers, detection, evaluation, learn, show.

`expand_inputs` turns files, folders, patterns and list files into image paths,
`detect_many` searches them in parallel, and `patternfind.batch.outputs` writes
results as they come. Dask is imported only when a cluster is asked for.
"""

from patternfind.batch.engine import ImageResult, available_cores, detect_many, search_images
from patternfind.batch.inputs import ExpandedInputs, expand_inputs

__all__ = [
    "ExpandedInputs",
    "ImageResult",
    "available_cores",
    "detect_many",
    "expand_inputs",
    "search_images",
]
