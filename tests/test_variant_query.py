"""Queries, tables and plots of sweep stores (dim ``variant``).

The sweep datasets are built like the store writer lays them out (palmc/store/writer.py ``template``): each
variant is first made as a store without a sweep (its own protocol: presentation length, record spacing, epochs),
then the variants are placed on the union of their record times (NaN where a variant has no record), with the
coordinates ``variant``, ``variant_label``, one per swept field, ``last_record``, ``presentation_steps``,
``record_every_steps``, ``steps_total``, a (time, variant) ``epoch`` when the epochs differ, and the conductances
along (model, variant). The central check: a query of one variant of the sweep equals the same query of that
variant's own store, and a query of the whole sweep holds each variant's result on the union of times.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import dask.array as dsa
import holoviews as hv
import numpy as np
import pytest
import xarray as xr

from palmc.query import QueryError, format_table, load_results, query, run_query_file, save_results, to_frame

pytestmark = pytest.mark.filterwarnings(
    "ignore:All-NaN slice:RuntimeWarning", "ignore:Mean of empty slice:RuntimeWarning",
    "ignore:Degrees of freedom:RuntimeWarning",
)

DT = 0.01
LAYERS = [2, 3, 3, 2]
SEEDS = [1, 2]
MODELS = ["BP", "PAL"]
SETTLING = 20  # steps; shared by all variants (the schema refuses to sweep it)
N_SAMPLES = 3  # presentations per epoch


@dataclass(frozen=True)
class Protocol:
    presentation_steps: int
    every: int
    epochs: int

    @property
    def total_steps(self) -> int:
        return SETTLING + self.epochs * N_SAMPLES * self.presentation_steps

    @property
    def record_steps(self) -> np.ndarray:
        return np.arange(1, self.total_steps // self.every + 1, dtype=np.int64) * self.every


# Tpres 0.1 / 0.05 / 0.2 ms, records every 2 / 1 / 5 steps, 2 / 2 / 1 epochs
MIXED = [Protocol(10, 2, 2), Protocol(5, 1, 2), Protocol(20, 5, 1)]
SHARED = [Protocol(10, 2, 2)] * 3


def run_dataset(protocol: Protocol, rng_seed: int) -> xr.Dataset:
    """One variant as a store without a sweep: smoothly drifting weights, so the angles change over time."""
    rng = np.random.default_rng(rng_seed)
    steps = protocol.record_steps
    n, width, n_layer = steps.size, max(LAYERS), len(LAYERS)
    per_epoch = N_SAMPLES * protocol.presentation_steps
    epoch = np.where(steps <= SETTLING, 0, (steps - SETTLING - 1) // per_epoch + 1)
    drift = np.sin(steps / 7.0)[:, None, None, None, None, None]

    def weights(pre_offset: int) -> np.ndarray:
        shape = (n_layer, width, width, len(SEEDS), len(MODELS))
        w = np.full((n, *shape), np.nan)
        for l in range(1, n_layer):
            p = l + pre_offset
            if 0 <= p < n_layer:
                sub = (slice(None), l, slice(0, LAYERS[l]), slice(0, LAYERS[p]))
                a, b = rng.normal(size=shape)[sub[1:]], rng.normal(size=shape)[sub[1:]]
                w[sub] = a[None] + drift[:, 0] * b[None]
        return w

    vbas = rng.normal(size=(n, n_layer, width, len(SEEDS), len(MODELS)))
    vbas[:, 0] = np.nan
    mse = np.abs(rng.normal(size=(n, len(SEEDS), len(MODELS)))) + steps[:, None, None] / 100.0
    mse[steps <= SETTLING] = np.nan
    big, vec = ("time", "layer", "neuron", "pre", "seed", "model"), ("time", "layer", "neuron", "seed", "model")
    coords = {
        "time": ("time", steps * DT, {"units": "ms"}), "step": ("time", steps), "epoch": ("time", epoch),
        "phase": ("time", np.array(["settling" if k <= SETTLING else "training" for k in steps], dtype=object)),
        "layer": np.arange(n_layer), "layer_size": ("layer", np.asarray(LAYERS)), "neuron": np.arange(width),
        "pre": np.arange(width), "seed": np.asarray(SEEDS), "model": np.array(MODELS, dtype=object),
        "model_kind": ("model", np.array(MODELS, dtype=object)),
        "activation": (("layer", "model"), np.array([["", "tanh", "logistic", "tanh"]] * 2, dtype=object).T),
        "gl": ("model", [0.1, 0.1]), "gbas": ("model", [1.0, 1.0]), "gapi": ("model", [0.8, 0.8]),
    }
    status = np.full((len(SEEDS), len(MODELS)), "complete", dtype=object)
    return xr.Dataset(
        {"WPP": (big, weights(-1)), "BPP": (big, weights(+1)), "vbas": (vec, vbas),
         "MSE": (("time", "seed", "model"), mse), "run_status": (("seed", "model"), status),
         "diverged_step": (("seed", "model"), np.full(status.shape, -1))},
        coords=coords,
        attrs={"task": "bw_only", "name": "sweep_test", "dt": DT, "Tpres": protocol.presentation_steps * DT,
               "record_every_steps": protocol.every, "steps_total": protocol.total_steps},
    )


def label(protocol: Protocol, i: int) -> str:
    return f"Tpres={protocol.presentation_steps * DT:g}, every={protocol.every}, v={i}"


def sweep_dataset(protocols: list[Protocol]) -> tuple[xr.Dataset, list[xr.Dataset]]:
    """The sweep store of ``protocols`` (laid out like the writer's template) and each variant's own store."""
    runs = [run_dataset(p, 10 + i) for i, p in enumerate(protocols)]
    steps = np.unique(np.concatenate([r["step"].values for r in runs]))
    positions = [np.searchsorted(steps, r["step"].values) for r in runs]
    n_var = len(runs)
    data = {}
    for name in ("WPP", "BPP", "vbas", "MSE"):
        first = runs[0][name]
        full = np.full((steps.size, *first.shape[1:], n_var), np.nan)
        for v, (r, pos) in enumerate(zip(runs, positions)):
            full[pos, ..., v] = r[name].values
        data[name] = (first.dims + ("variant",), full)
    status = np.stack([r["run_status"].values for r in runs], axis=-1)
    data["run_status"] = (("seed", "model", "variant"), status)
    data["diverged_step"] = (("seed", "model", "variant"), np.full(status.shape, -1))
    epochs = {(p.presentation_steps,) for p in protocols}
    if len(epochs) == 1:
        epoch = ("time", runs[0]["epoch"].values)
    else:
        table = np.full((steps.size, n_var), -1)
        for v, (r, pos) in enumerate(zip(runs, positions)):
            table[pos, v] = r["epoch"].values
        epoch = (("time", "variant"), table)
    base = runs[0]
    coords = {c: base[c] for c in ("layer", "layer_size", "neuron", "pre", "seed", "model", "model_kind",
                                   "activation")}
    coords.update({
        "time": ("time", steps * DT, {"units": "ms"}), "step": ("time", steps), "epoch": epoch,
        "phase": ("time", np.array(["settling" if k <= SETTLING else "training" for k in steps], dtype=object)),
        "variant": np.arange(n_var),
        "variant_label": ("variant", np.array([label(p, i) for i, p in enumerate(protocols)], dtype=object)),
        "Tpres": ("variant", [p.presentation_steps * DT for p in protocols]),
        "v": ("variant", np.arange(n_var)),
        "last_record": ("variant", [int(pos[-1]) for pos in positions]),
        "presentation_steps": ("variant", [p.presentation_steps for p in protocols]),
        "record_every_steps": ("variant", [p.every for p in protocols]),
        "steps_total": ("variant", [p.total_steps for p in protocols]),
    })
    for g in ("gl", "gbas", "gapi"):
        coords[g] = (("model", "variant"), np.repeat(base[g].values[:, None], n_var, axis=1))
    attrs = dict(base.attrs, swept=json.dumps(["dynamics.Tpres", "recording.every"]))
    return xr.Dataset(data, coords=coords, attrs=attrs), runs


@pytest.fixture(scope="module")
def mixed() -> tuple[xr.Dataset, list[xr.Dataset]]:
    return sweep_dataset(MIXED)


@pytest.fixture(scope="module")
def shared() -> tuple[xr.Dataset, list[xr.Dataset]]:
    return sweep_dataset(SHARED)


def _bare(da: xr.DataArray) -> xr.DataArray:
    """Only the index coordinates and those of the records (the variant's bookkeeping and the per-model
    coordinates, which a sweep carries along (model, variant), are left out)."""
    return da.drop_vars([c for c in da.coords if c not in da.dims and c not in ("time", "step", "epoch", "phase")])


def _variant_values(result: xr.DataArray, v: int) -> xr.DataArray:
    """Variant v of a whole-sweep result, without the times where it has no value (all NaN)."""
    one = result.isel(variant=v)
    if "time" not in one.dims:
        return one
    defined = one.notnull().any([d for d in one.dims if d != "time"]).values
    return one.isel(time=np.flatnonzero(defined))


# ----------------------------------------------------------------------------------------------------------------
# the fixture itself
# ----------------------------------------------------------------------------------------------------------------


def test_sweep_layout(mixed: tuple[xr.Dataset, list[xr.Dataset]]) -> None:
    ds, runs = mixed
    assert ds["WPP"].dims == ("time", "layer", "neuron", "pre", "seed", "model", "variant")
    assert ds["epoch"].dims == ("time", "variant") and (ds["epoch"].values == -1).any()
    assert ds.sizes["time"] == np.unique(np.concatenate([r["step"].values for r in runs])).size
    for v, r in enumerate(runs):
        assert ds["time"].values[ds["last_record"].values[v]] == pytest.approx(r["time"].values[-1])


# ----------------------------------------------------------------------------------------------------------------
# selecting variants
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", [0, 1, 2])
def test_one_variant_equals_its_own_store(mixed: tuple[xr.Dataset, list[xr.Dataset]], v: int) -> None:
    ds, runs = mixed
    by_index = query(ds, "angle_BPP_WPPT", select={"variant": v}).compute()
    by_label = query(ds, "angle_BPP_WPPT", select={"variant": label(MIXED[v], v)}).compute()
    own = query(runs[v], "angle_BPP_WPPT").compute()
    assert "variant" not in by_index.dims and by_index["variant"].item() == v
    assert by_index["variant_label"].item() == label(MIXED[v], v)
    assert by_index["epoch"].dims == ("time",)  # 1-D again: the padding of the other variants is gone
    xr.testing.assert_allclose(_bare(by_index), _bare(own))
    xr.testing.assert_equal(by_index, by_label)
    assert ds.attrs["Tpres"] == pytest.approx(0.1), "the store's attrs (variant 0) are left alone"
    assert not np.isnan(by_index.sel(layer=1).values).any()


def test_select_several_variants_and_swept_fields(mixed: tuple[xr.Dataset, list[xr.Dataset]]) -> None:
    ds, runs = mixed
    two = query(ds, "MSE", select={"variant": [2, 0]}).compute()
    assert list(two["variant"].values) == [2, 0]
    # only the records of variants 0 and 2 are left: multiples of 2 or 5 steps up to step 80
    assert set(two["step"].values) == set(runs[0]["step"].values) | set(runs[2]["step"].values)
    field = query(ds, "MSE", select={"Tpres": 0.05}).compute()  # a swept field filters, the dim stays
    assert field.sizes["variant"] == 1 and field["variant"].item() == 1
    xr.testing.assert_allclose(_bare(field.isel(variant=0, drop=True)), _bare(query(runs[1], "MSE").compute()))
    both = query(ds, "MSE", select={"Tpres": [0.1, 0.2], "model": "PAL"}).compute()
    assert list(both["variant"].values) == [0, 2] and "model" not in both.dims


def test_variant_selection_errors(mixed: tuple[xr.Dataset, list[xr.Dataset]]) -> None:
    ds, runs = mixed
    with pytest.raises(QueryError, match=r"variant 7 not in the store; variants .*0 \(Tpres=0.1, every=2, v=0\)"):
        query(ds, "MSE", select={"variant": 7})
    with pytest.raises(QueryError, match="variant 'Tpres=9' not in the store"):
        query(ds, "MSE", select={"variant": "Tpres=9"})
    with pytest.raises(QueryError, match="Tpres 0.3 matches no variant; values of Tpres: 0.05, 0.1, 0.2"):
        query(ds, "MSE", select={"Tpres": 0.3})
    with pytest.raises(QueryError, match="no 'variant' dim"):
        query(runs[0], "MSE", select={"variant": 0})


# ----------------------------------------------------------------------------------------------------------------
# aggregation per variant
# ----------------------------------------------------------------------------------------------------------------


def test_last_is_each_variants_last_record(mixed: tuple[xr.Dataset, list[xr.Dataset]]) -> None:
    ds, runs = mixed
    last = query(ds, "angle_BPP_WPPT", aggregate="last")
    assert "time" not in last.dims and last["time"].dims == ("variant",)
    last = last.compute()
    assert not np.isnan(last.sel(layer=1).values).any(), "the NaN padding after a variant's end was taken"
    for v, run in enumerate(runs):
        own = query(run, "angle_BPP_WPPT", aggregate="last").compute()
        xr.testing.assert_allclose(_bare(last.isel(variant=v)), _bare(own))
        assert last["step"].values[v] == run["step"].values[-1]
    # a time range in which variant 1 (ends at step 50) has no record: NaN for it, values for the others
    late = query(ds, "MSE", select={"time": [0.6, 0.8]}, aggregate="last").compute()
    assert np.isnan(late.isel(variant=1).values).all() and not np.isnan(late.isel(variant=[0, 2]).values).any()


AGGREGATIONS = [
    ({}, {"aggregate": "per_sample_end"}),
    ({}, {"aggregate": {"every": "1 Tpres"}}),
    ({}, {"aggregate": {"every": 0.1}}),
    ({}, {"aggregate": {"per_sample_end": True, "moving_window": "2 Tpres"}}),
    ({}, {"aggregate": {"moving_window": "1 Tpres", "last": True}}),
    ({}, {"select": {"epoch": 1}}),
    ({}, {"select": {"epoch": [0, 1], "phase": "training"}, "aggregate": "last"}),
]


@pytest.mark.parametrize("metric", ["angle_jacobians", "MSE"])
@pytest.mark.parametrize("kwargs", [a[1] for a in AGGREGATIONS], ids=lambda k: json.dumps(k))
def test_protocol_dependent_aggregations_per_variant(
    mixed: tuple[xr.Dataset, list[xr.Dataset]], metric: str, kwargs: dict
) -> None:
    ds, runs = mixed
    whole = query(ds, metric, **kwargs).compute()
    assert whole.dims[-2:] == ("model", "variant")
    for v, run in enumerate(runs):
        own = query(run, metric, **kwargs).compute()
        one = query(ds, metric, **{**kwargs, "select": {**kwargs.get("select", {}), "variant": v}}).compute()
        own = _bare(own)
        xr.testing.assert_allclose(_bare(one), own)
        got = _variant_values(whole, v)
        if "time" in own.dims:
            own = own.isel(time=np.flatnonzero(own.notnull().any([d for d in own.dims if d != "time"]).values))
        xr.testing.assert_allclose(_bare(got).transpose(*own.dims), own)


def test_per_variant_results_keep_store_coordinates(mixed: tuple[xr.Dataset, list[xr.Dataset]]) -> None:
    ds, runs = mixed
    ends = query(ds, "MSE", aggregate="per_sample_end").compute()
    assert ends["epoch"].dims == ("time", "variant")
    for v, run in enumerate(runs):
        tp = MIXED[v].presentation_steps
        own_ends = [s for s in run["step"].values if s >= SETTLING and (s - SETTLING) % tp == 0]
        valid = ends["epoch"].values[:, v] >= 0
        assert list(ends["step"].values[valid]) == own_ends
    assert (ends["phase"].values[ends["step"].values > SETTLING] == "training").all()
    blocks = query(ds, "MSE", aggregate={"every": "1 Tpres"}).compute()  # block labels differ per variant
    assert {0.05, 0.1, 0.2} <= {round(t, 6) for t in blocks["time"].values}
    assert "last_record" not in blocks.coords and "last_record" not in ends.coords


def test_epoch_error_names_the_variant(mixed: tuple[xr.Dataset, list[xr.Dataset]]) -> None:
    ds, _ = mixed
    with pytest.raises(QueryError, match=r"variant 2 \(Tpres=0.2, every=5, v=2\): epoch \[2\] not in the store"):
        query(ds, "MSE", select={"epoch": 2})


def test_shared_protocol_sweep(shared: tuple[xr.Dataset, list[xr.Dataset]]) -> None:
    ds, runs = shared
    assert ds["epoch"].dims == ("time",)
    for kwargs in ({"aggregate": {"per_sample_end": True, "moving_window": "2 Tpres"}},
                   {"select": {"epoch": 2}, "aggregate": "last"}, {"aggregate": {"every": "1 Tpres"}}):
        whole = query(ds, "angle_jacobians", **kwargs).compute()
        for v, run in enumerate(runs):
            xr.testing.assert_allclose(_bare(whole.isel(variant=v)),
                                       _bare(query(run, "angle_jacobians", **kwargs).compute()))
    last = query(ds, "MSE", aggregate="last")
    assert last["time"].ndim == 0, "variants with one protocol end together: a scalar time as without sweeps"


# ----------------------------------------------------------------------------------------------------------------
# reductions, laziness, tables and files
# ----------------------------------------------------------------------------------------------------------------


def test_reductions_keep_variant(mixed: tuple[xr.Dataset, list[xr.Dataset]]) -> None:
    ds, _ = mixed
    per_seed = query(ds, "angle_BPP_WPPT", aggregate="last").compute()
    mean = query(ds, "angle_BPP_WPPT", aggregate="last", reduce="mean").compute()
    assert mean.dims == ("layer", "model", "variant")
    np.testing.assert_allclose(mean.values, per_seed.mean("seed").transpose(*mean.dims).values)
    band = query(ds, "angle_BPP_WPPT", reduce=[0.1, 0.9]).compute()
    assert band.dims == ("time", "layer", "quantile", "model", "variant")
    assert list(band["variant_label"].values) == [label(p, i) for i, p in enumerate(MIXED)]
    over = query(ds, "MSE", aggregate="last", reduce={"how": "max", "over": ["variant"]}).compute()
    assert over.dims == ("seed", "model")
    np.testing.assert_allclose(over.values, query(ds, "MSE", aggregate="last").compute().max("variant").values)


def test_lazy_on_a_chunked_sweep(mixed: tuple[xr.Dataset, list[xr.Dataset]]) -> None:
    ds, _ = mixed
    lazy_ds = ds.chunk({"time": 16, "variant": 1})
    for kwargs in ({"aggregate": "last", "reduce": "mean"}, {"aggregate": {"every": "1 Tpres"}},
                   {"aggregate": "per_sample_end", "reduce": [0.1, 0.9]}):
        lazy = query(lazy_ds, "angle_jacobians", **kwargs)
        assert isinstance(lazy.data, dsa.Array), kwargs
        xr.testing.assert_allclose(lazy.compute(), query(ds, "angle_jacobians", **kwargs).compute())


SWEEP_QUERIES = """
queries:
  final_mse:
    metric: MSE
    aggregate: last
    reduce: mean
  final_angle_slow:
    metric: angle_BPP_WPPT
    select: {variant: 2, layer: 1}
    aggregate: last
    reduce: mean
  mse_per_presentation:
    metric: MSE
    aggregate: {every: 1 Tpres}
    reduce: median
"""


def test_query_file_and_table_on_a_zarr_sweep(mixed: tuple[xr.Dataset, list[xr.Dataset]], tmp_path: Path) -> None:
    ds, _ = mixed
    store = tmp_path / "sweep.zarr"
    ds.to_zarr(store, consolidated=False, zarr_format=3)
    qfile = tmp_path / "q.yaml"
    qfile.write_text(SWEEP_QUERIES)
    results = run_query_file(store, qfile)
    final = results["final_mse"].compute()
    assert final.dims == ("model", "variant") and final["time"].dims == ("variant",)
    text = format_table(results)
    lines = text.splitlines()
    header = lines[0].split()
    assert "variant" in header and header.index("variant") > header.index("model")
    value = format(final.sel(model="PAL", variant=1).item(), ".6g")
    row = next(line for line in lines if line.startswith("final_mse") and "1: Tpres=0.05, every=1, v=1" in line
               and " PAL " in line)
    assert value in row and format(final["time"].values[1], ".6g") in row
    slow = next(line for line in lines if line.startswith("final_angle_slow"))
    assert "2: Tpres=0.2, every=5, v=2" in slow  # a selected variant is shown like a scalar time
    back = load_results(save_results(results, tmp_path / "results.nc"))
    np.testing.assert_allclose(back["final_mse"].transpose(*final.dims).values, final.values)
    assert list(back["final_mse"]["variant"].values) == [0, 1, 2]
    frame = to_frame(results)
    rows = frame[(frame["query"] == "final_mse") & (frame["model"] == "PAL") & (frame["variant"] == 1)]
    assert rows["variant_label"].item() == "Tpres=0.05, every=1, v=1"
    assert rows["value"].item() == pytest.approx(final.sel(model="PAL", variant=1).item())


# ----------------------------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------------------------


def _times(run: xr.Dataset) -> np.ndarray:
    return np.asarray(run["time"].values, dtype=float)


def test_plot_result_one_curve_per_model_and_variant(mixed: tuple[xr.Dataset, list[xr.Dataset]]) -> None:
    from palmc.plots import plot_query, plot_result

    ds, runs = mixed
    plot = plot_query(ds, "angle_BPP_WPPT")
    assert isinstance(plot, hv.Layout) and len(plot) == 2  # hidden layers 1 and 2
    curves = [el for el in plot.values()[0] if type(el) is hv.Curve]
    expected = [f"{m} [{label(p, i)}]" for m in MODELS for i, p in enumerate(MIXED)]
    assert [c.label for c in curves] == expected
    assert len({c.opts.get().kwargs["color"] for c in curves}) == len(expected)
    for curve in curves:
        v = int(curve.label[-2])
        # drawn through the variant's own records: no padding, no NaN gaps
        np.testing.assert_allclose(curve.dimension_values(0), _times(runs[v]))
        assert not np.isnan(curve.dimension_values(1)).any()
    one = plot_result(query(ds, "MSE", select={"variant": 1, "model": "PAL"}, reduce="mean"))
    assert "Tpres=0.05, every=1, v=1" in one.opts.get().kwargs["title"]
    bars = plot_result(query(ds, "angle_BPP_WPPT", aggregate="last"))
    bar = next(el for el in bars if type(el) is hv.Bars)
    assert [d.name for d in bar.kdims] == ["layer", "model", "variant"]
    assert set(bar.dimension_values("variant")) == {label(p, i) for i, p in enumerate(MIXED)}
    for obj in (plot, one, bars):
        hv.render(obj, backend="bokeh")


def test_trajectories_have_a_variant_widget(mixed: tuple[xr.Dataset, list[xr.Dataset]]) -> None:
    from palmc.plots import weight_trajectories

    ds, runs = mixed
    hmap = weight_trajectories(ds, "BPP", layers=[1, 2], max_lines=4)
    assert [d.name for d in hmap.kdims] == ["model", "variant", "seed", "layer"]
    assert len(hmap) == 2 * 3 * 2 * 2
    assert hmap.kdims[1].pprint_value(2) == label(MIXED[2], 2)
    frame = hmap[("PAL", 2, 1, 1)]
    x = frame.dimension_values(0)
    np.testing.assert_allclose(x[~np.isnan(x)][: runs[2].sizes["time"]], _times(runs[2]))
    only = weight_trajectories(ds, "WPP", variants=[1], seeds=[2], models="BP")
    assert {k[1] for k in only.keys()} == {1}


@pytest.fixture(scope="module")
def sweep_html(mixed: tuple[xr.Dataset, list[xr.Dataset]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from palmc.plots import save_dashboard

    ds, _ = mixed
    directory = tmp_path_factory.mktemp("sweep_html")
    queries = directory / "q.yaml"
    queries.write_text(SWEEP_QUERIES)
    return save_dashboard(ds, directory / "sweep.html", queries, include_defaults=True)


def test_sweep_dashboard(sweep_html: Path, mixed: tuple[xr.Dataset, list[xr.Dataset]]) -> None:
    from palmc.plots.dashboard import _thin

    text = sweep_html.read_text(encoding="utf-8")
    for expected in ("variants", "0.05, 0.1, 0.2 ms (per variant)", "PAL [Tpres=0.2, every=5, v=2]",
                     "final_angle_slow", "Pick the model, variant, seed"):
        assert expected in text, expected
    ds, runs = mixed
    thin = _thin(ds, 10)  # each variant keeps at most 10 of its own records, ending on its last one
    assert thin.sizes["time"] <= 30
    for v, run in enumerate(runs):
        own = query(thin, "MSE", select={"variant": v})  # also the others' kept records where v records too
        assert 10 <= own.sizes["time"] <= 30 and own["step"].values[-1] == run["step"].values[-1]


def test_sweep_dashboard_renders_in_chromium(sweep_html: Path, tmp_path: Path) -> None:
    from palmc.plots.browser import find_chromium, open_in_chromium, screenshot_stats

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium); the browser check needs it")
    png = tmp_path / "sweep.png"
    report = open_in_chromium(sweep_html, png, window_size=(1200, 900), budget_ms=5000, chromium=chromium,
                              exercise_widgets=True)
    assert report.errors == [], "JavaScript errors:\n" + "\n".join(report.errors)
    assert report.selects_changed == 4  # model, variant, seed, layer
    stats = screenshot_stats(png)
    assert stats["colors"] > 100 and stats["non_white"] > 0.02, stats
