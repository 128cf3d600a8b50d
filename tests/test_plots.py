"""Tests of palmc.plots: decimation, curves with seed bands, trajectories, and the standalone dashboard.

The dashboard is opened in headless Chromium (skipped when no Chromium is installed): the page must load offline
without a JavaScript error (window.onerror, failed resource loads, unhandled rejections and console.error are
recorded by a probe script; Chromium's console log is scanned for "Uncaught"), render its bokeh root, switch
frames when the widgets change, and give a screenshot that is not blank.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import dask.array as dsa
import holoviews as hv
import numpy as np
import pytest
import xarray as xr

import palmc
from palmc.plots import (
    build_dashboard,
    decimate,
    default_metrics,
    plot_query,
    plot_result,
    save_dashboard,
    seed_band,
    trajectories,
    weight_trajectories,
)
from palmc.plots.browser import find_chromium, open_in_chromium, screenshot_stats
from palmc.query import query
from palmc.schema import parse_experiment

pytestmark = pytest.mark.filterwarnings(
    "ignore:All-NaN slice:RuntimeWarning", "ignore:Mean of empty slice:RuntimeWarning",
    "ignore:Degrees of freedom:RuntimeWarning",
)

BW_ONLY = """\
name: plots_bw
description: tiny bw_only store for the plot tests
task: bw_only
network: {layers: [2, 3, 3, 2], activation: logistic}
dynamics: {dt: 0.01, Tpres: 0.5, settling_time: 0.5}
plasticity: {eta_fw: [0.0, 0.0, 0.0], eta_bw: [200.0, 200.0], eta_IP: [0.0, 0.0], eta_PI: [0.5, 0.5],
             alpha: [1.0e-5, 1.0e-5]}
noise: {type: OU, mode: const, scale: [0.1, 0.1], tauxi: 0.1, dtxi: 0.01}
input: {signal: step, dataset_size: 3, epochs: 3}
models: [{kind: BP}, {kind: PAL}]
seeds: [1, 2]
recording: {variables: [WPP, BPP, vbas, uP], every: 2}
"""

FW_BW = """\
name: plots_fw
task: fw_bw
network: {layers: [2, 3, 2], activation: logistic}
dynamics: {dt: 0.01, Tpres: 0.5, settling_time: 0.5}
plasticity: {eta_fw: [1.0, 1.0], eta_bw: [0.0], eta_IP: [0.0], eta_PI: [0.0], alpha: [1.0e-5]}
noise: {type: OU, mode: const, scale: [0.05], tauxi: 0.1, dtxi: 0.01}
input: {signal: step, dataset_size: 3, epochs: 3}
models: [{kind: BP}, {kind: FA}]
seeds: [1, 2]
recording: {every: 2}
"""

QUERIES = """\
queries:
  final_angle:
    metric: angle_BPP_WPPT
    select: {phase: training}
    aggregate: last
    reduce: {quantile: [0.1, 0.9]}
    description: final angle, 10-90% band over seeds
  final_angle_per_seed:
    metric: angle_BPP_WPPT
    aggregate: last
  mse_trace:
    metric: MSE
    aggregate: {moving_window: 1 Tpres}
    reduce: {quantile: [0.1, 0.5, 0.9]}
  weights_BP:
    variable: WPP
    select: {layer: 1, model: BP}
"""


def _simulate(text: str, directory: Path) -> Path:
    experiment = parse_experiment(text)
    return palmc.simulate(experiment, directory / f"{experiment.name}.zarr", engine="numpy", progress=False,
                          workers=1)


@pytest.fixture(scope="module")
def bw_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _simulate(BW_ONLY, tmp_path_factory.mktemp("bw"))


@pytest.fixture(scope="module")
def fw_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _simulate(FW_BW, tmp_path_factory.mktemp("fw"))


@pytest.fixture(scope="module")
def bw_html(bw_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_dashboard(bw_store, tmp_path_factory.mktemp("html") / "bw_dashboard.html")


@pytest.fixture(scope="module")
def fw_html(fw_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("html_fw")
    queries = directory / "queries.yaml"
    queries.write_text(QUERIES)
    return save_dashboard(palmc.open(fw_store), directory / "fw_dashboard.html", queries, include_defaults=True)


# ----------------------------------------------------------------------------------------------------------------
# decimation and bands
# ----------------------------------------------------------------------------------------------------------------


def _long_series(n: int = 1_000_000) -> xr.DataArray:
    t = np.arange(1, n + 1) * 0.01
    data = dsa.from_array(np.stack([np.sin(t / 50.0) + s for s in range(3)], axis=1), chunks=(100_000, 3))
    return xr.DataArray(data, dims=("time", "seed"), coords={"time": t, "seed": [1, 2, 3],
                                                             "step": ("time", np.arange(1, n + 1))})


def test_decimate_block_means_are_lazy_and_short() -> None:
    da = _long_series()
    out = decimate(da, 2000)
    assert out.chunks is not None, "decimation must stay lazy on a dask-backed array"
    assert out.sizes["time"] == 2000 and "step" not in out.coords
    k = 500  # 10^6 / 2000 records per block
    values = out.values
    np.testing.assert_allclose(values[0], da.values[:k].mean(axis=0))
    np.testing.assert_allclose(float(out["time"][0]), da["time"].values[:k].mean())
    np.testing.assert_allclose(values[-1], da.values[-k:].mean(axis=0))


def test_decimate_uneven_blocks_and_stride() -> None:
    da = xr.DataArray(np.arange(10.0), dims="time", coords={"time": np.arange(1, 11) * 0.1})
    mean = decimate(da, 4)  # k = 3: blocks [0,1,2] [3,4,5] [6,7,8] [9]
    np.testing.assert_allclose(mean.values, [1.0, 4.0, 7.0, 9.0])
    stride = decimate(da, 4, method="stride")
    np.testing.assert_allclose(stride.values, [0.0, 3.0, 6.0, 9.0])  # ends on the last record
    assert decimate(da, 100) is da


def test_seed_band_kinds() -> None:
    da = xr.DataArray([[0.0, 2.0, 4.0], [1.0, np.nan, 3.0]], dims=("time", "seed"),
                      coords={"time": [1.0, 2.0], "seed": [1, 2, 3]})
    mm = seed_band(da, "minmax")
    np.testing.assert_allclose(mm["center"], [2.0, 2.0])
    np.testing.assert_allclose(mm["lower"], [0.0, 1.0])
    np.testing.assert_allclose(mm["upper"], [4.0, 3.0])
    sd = seed_band(da, "std")
    np.testing.assert_allclose(sd["upper"] - sd["center"], [np.std([0, 2, 4]), 1.0])
    q = seed_band(da, "quantile", quantiles=(0.0, 1.0))
    np.testing.assert_allclose(q["center"], [2.0, 2.0])
    np.testing.assert_allclose(q["lower"], [0.0, 1.0])
    reduced = da.quantile([0.25, 0.5, 0.75], dim="seed")
    rq = seed_band(reduced)
    np.testing.assert_allclose(rq["center"], reduced.sel(quantile=0.5))
    np.testing.assert_allclose(rq["upper"], reduced.sel(quantile=0.75))


def test_plot_result_of_a_long_series_has_at_most_max_points() -> None:
    da = _long_series().expand_dims(model=["PAL"]).rename("angle")
    da.attrs.update(metric="angle_BPP_WPPT", units="deg")
    plot = plot_result(da, max_points=2000)
    assert isinstance(plot, hv.Overlay)
    curves = [el for el in plot if type(el) is hv.Curve]
    areas = [el for el in plot if type(el) is hv.Area]
    assert len(curves) == 1 and len(areas) == 1
    assert len(curves[0]) <= 2000
    assert curves[0].kdims[0].unit == "ms" and curves[0].vdims[0].unit == "deg"
    assert "Bᴾᴾ" in curves[0].vdims[0].label


# ----------------------------------------------------------------------------------------------------------------
# curves and trajectories of a real store
# ----------------------------------------------------------------------------------------------------------------


def test_plot_query_panels_per_hidden_layer_and_models(bw_store: Path) -> None:
    ds = palmc.open(bw_store)
    plot = plot_query(ds, "angle_BPP_WPPT")
    assert isinstance(plot, hv.Layout) and len(plot) == 2  # hidden layers 1 and 2
    overlay = plot.values()[0]
    labels = [el.label for el in overlay if type(el) is hv.Curve]
    assert labels == ["BP", "PAL"]
    assert any(isinstance(el, hv.Area) for el in overlay), "a band over the two seeds is drawn"
    bp = next(el for el in overlay if type(el) is hv.Curve and el.label == "BP")
    np.testing.assert_allclose(bp.dimension_values(1), 0.0, atol=1e-6)  # BP: B^PP = (W^PP)^T
    hv.render(plot, backend="bokeh")


def test_plot_result_scalar_and_extra_dims(bw_store: Path) -> None:
    ds = palmc.open(bw_store)
    last = plot_result(query(ds, "angle_BPP_WPPT", aggregate="last"))
    assert isinstance(last, hv.Layout)
    assert {type(el).__name__ for el in last} == {"Bars", "Table"}
    band = plot_result(query(ds, "angle_jacobians", reduce={"quantile": [0.1, 0.9]}))
    assert len(band) == 2
    weights = plot_result(query(ds, variable="WPP", select={"layer": 2, "model": "PAL"}))
    (curve,) = [el for el in weights if type(el) is hv.Curve]
    n_time = ds.sizes["time"]
    assert np.isnan(curve.dimension_values(1)).sum() == 3 * 3 - 1  # 9 entries as one NaN-separated line
    assert len(curve) == 9 * n_time + 8
    voltages = plot_result(query(ds, variable="uP", reduce="mean"))
    assert len(voltages) == 3, "layer 0 has no pyramidal voltage and is left out"
    for obj in (last, band, weights, voltages):
        hv.render(obj, backend="bokeh")


def test_trajectories_frames(bw_store: Path) -> None:
    ds = palmc.open(bw_store)
    hmap = weight_trajectories(ds, "BPP", layers=[1, 2, 3], max_lines=4)
    assert [d.name for d in hmap.kdims] == ["model", "seed", "layer"]
    assert len(hmap) == 2 * 2 * 3
    frame = hmap[("PAL", 2, 1)]
    assert frame.label.startswith("Bᴾᴾ₁")
    assert np.isnan(frame.dimension_values(1)).sum() == 3  # 4 lines of the 3x3 matrix, NaN-separated
    empty = hmap[("PAL", 2, 3)]
    assert "not defined" in empty.label and np.isnan(empty.dimension_values(1)).all()
    volt = trajectories(ds, "uP", models="PAL", seeds=1)
    assert sorted(k[2] for k in volt.keys()) == [1, 2, 3]
    hv.render(hmap, backend="bokeh")


def test_default_metrics(bw_store: Path, fw_store: Path) -> None:
    assert default_metrics(palmc.open(bw_store)) == ["angle_BPP_WPPT", "angle_jacobians", "angle_BPP_RHS"]
    assert default_metrics(palmc.open(fw_store))[:2] == ["MSE", "angle_BPP_WPPT"]


def test_build_dashboard_with_queries_only(fw_store: Path, tmp_path: Path) -> None:
    queries = tmp_path / "q.yaml"
    queries.write_text(QUERIES)
    dashboard = build_dashboard(palmc.open(fw_store), queries)
    text = "\n".join(str(getattr(p, "object", "")) for p in dashboard.objects)
    assert "final_angle" in text and "weights_BP" in text
    assert "Learning curves" not in text and "One run" not in text


# ----------------------------------------------------------------------------------------------------------------
# the standalone HTML file
# ----------------------------------------------------------------------------------------------------------------


def _assert_standalone(html: Path) -> str:
    text = html.read_text(encoding="utf-8")
    sources = re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']([^\"']+)", text, flags=re.IGNORECASE)
    assert not sources, f"external scripts: {sources}"
    links = re.findall(r"<link[^>]*\bhref\s*=\s*[\"'](https?:[^\"']+)", text, flags=re.IGNORECASE)
    assert not links, f"external stylesheets: {links}"
    imported = re.findall(r'"url":"(https?://[^"]+)"', text)
    assert not imported, f"stylesheets imported from the network: {imported}"
    assert "Bokeh" in text
    assert html.stat().st_size < 15_000_000
    return text


def test_dashboard_is_standalone(bw_html: Path, fw_html: Path) -> None:
    text = _assert_standalone(bw_html)
    for expected in ("plots_bw", "Bᴾᴾ", "Wᴾᴾ", "time", "deg", "One run"):
        # bokeh's JSON writes non-ASCII characters as \u escapes
        assert expected in text or expected.encode("ascii", "backslashreplace").decode() in text, expected
    text = _assert_standalone(fw_html)
    for expected in ("plots_fw", "MSE", "final_angle", "mse_trace"):
        assert expected in text


def _chromium() -> str:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium); the browser check needs it")
    return chromium


@pytest.mark.parametrize("which", ["bw", "fw"])
def test_dashboard_renders_in_chromium_without_js_errors(
    which: str, bw_html: Path, fw_html: Path, tmp_path: Path
) -> None:
    chromium = _chromium()
    html = bw_html if which == "bw" else fw_html
    png = tmp_path / "dashboard.png"
    report = open_in_chromium(html, png, window_size=(1200, 900), budget_ms=5000, chromium=chromium,
                              exercise_widgets=True)
    assert report.errors == [], "JavaScript errors:\n" + "\n".join(report.errors)
    assert report.bokeh_version is not None and report.roots >= 1
    assert report.selects_changed == 3  # model, seed, layer
    top = 3 if which == "bw" else 2
    sub = "₀₁₂₃₄₅₆₇₈₉"
    assert f"Wᴾᴾ{sub[top]} (layer {top - 1} → {top})" in report.titles, report.titles
    assert f"Bᴾᴾ{sub[top]}: not defined at layer {top}" in report.titles, report.titles
    stats = screenshot_stats(png)
    assert stats["colors"] > 100 and stats["non_white"] > 0.02, f"the screenshot looks blank: {stats}"


def test_browser_probe_reports_errors(tmp_path: Path) -> None:
    chromium = _chromium()
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><head></head><body><p>x</p><script>console.error('boom');</script>"
        "<script>notAFunction();</script><script src='https://cdn.example.org/missing.js'></script></body></html>"
    )
    report = open_in_chromium(page, chromium=chromium, budget_ms=1500)
    joined = "\n".join(report.errors)
    assert "console.error: boom" in joined
    assert "notAFunction" in joined
    assert "failed to load https://cdn.example.org/missing.js" in joined
