"""Interactive plots of palmc recordings (HoloViews, bokeh backend) and the ``palmc plot`` dashboard.

In a notebook::

    import holoviews as hv
    from palmc.plots import plot_query, weight_trajectories
    hv.extension("bokeh")
    plot_query(ds, "angle_BPP_WPPT", select={"phase": "training"})   # mean over seeds + min-max band, per layer
    weight_trajectories(ds, "BPP")                                     # widgets: model, seed, layer

From the command line, ``palmc plot STORE [QUERIES.yaml] -o dashboard.html`` calls :func:`save_dashboard`, which
writes one offline HTML file (bokeh inlined; the per-run widgets switch frames in the browser, see
:func:`linked_holomaps`). ``python -m palmc.plots.browser page.html --screenshot page.png`` checks a page in headless
Chromium (JavaScript errors) and takes a screenshot.
"""

from palmc.plots.curves import (
    METRIC_LABELS,
    accuracy_curves,
    decimate,
    model_colors,
    plot_query,
    plot_result,
    seed_band,
    trajectories,
    value_dimension,
    voltage_trajectories,
    weight_trajectories,
)
from palmc.plots.dashboard import build_dashboard, default_metrics, save_dashboard, save_page
from palmc.plots.linked import linked_holomaps, render_bokeh

__all__ = [
    "accuracy_curves",
    "METRIC_LABELS",
    "build_dashboard",
    "decimate",
    "default_metrics",
    "linked_holomaps",
    "model_colors",
    "plot_query",
    "plot_result",
    "render_bokeh",
    "save_dashboard",
    "save_page",
    "seed_band",
    "trajectories",
    "value_dimension",
    "voltage_trajectories",
    "weight_trajectories",
]
