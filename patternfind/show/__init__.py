"""Show: detections drawn on images, and the matplotlib pictures of filters, PR curves and reports.

May import: core, layers, detection, evaluation, learn.

`draw` needs only OpenCV; `plot` imports matplotlib inside its functions
(``pip install "patternfind[plot]"``).
"""

from patternfind.show.draw import draw_detections, heatmap
from patternfind.show.plot import (
    draw_evaluation,
    plot_detections,
    plot_filter,
    plot_pr_curves,
    write_report,
)

__all__ = [
    "draw_detections",
    "draw_evaluation",
    "heatmap",
    "plot_detections",
    "plot_filter",
    "plot_pr_curves",
    "write_report",
]
