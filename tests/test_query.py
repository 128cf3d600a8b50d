"""Tests of the declarative, lazy query layer (palmc.query).

Golden comparisons: the three comparison angles of the reference (stored for every call) are compared with the
metrics computed from the stored states. Tolerances: rtol 1e-9 and atol 1e-10 deg (the atol only matters where the
reference angle is exactly 0). NaNs in the reference: in ``opt_relu`` they come from a zero phi' matrix (0/0), and
the metrics give NaN at exactly those entries; in ``opt_bp_bw_only`` (seed 11) the reference's cosine rounds to
1.0000000000000002 and its arccos is NaN, while the metrics (a stable form of the same angle) give ~0 deg there.
"""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

try:
    from tests.golden_dataset import golden_angles, golden_dataset, load_case
except ImportError:  # run from inside tests/
    sys.path.insert(0, str(Path(__file__).parent))
    from golden_dataset import golden_angles, golden_dataset, load_case  # type: ignore[no-redef]

from palmc.query import (  # noqa: E402
    Query,
    QueryError,
    describe_metrics,
    evaluate,
    format_table,
    list_metrics,
    load_queries,
    load_results,
    open_store,
    query,
    run_query_file,
    save_results,
)

# metrics over all-NaN slices (settling records of fw_bw losses, inactive relu layers) legitimately give NaN
pytestmark = pytest.mark.filterwarnings(
    "ignore:All-NaN slice:RuntimeWarning", "ignore:Mean of empty slice:RuntimeWarning"
)

ANGLE_CASES = ["pal_variants", "pal_variants_2hidden", "opt_activation_list", "opt_relu", "opt_hard_sigmoid",
               "opt_bp_bw_only"]
ANGLE_METRICS = {"angle_BPP_WPPT": "angle_WPPT_BPP", "angle_jacobians": "angle_jacobians_BP",
                 "angle_BPP_RHS": "angle_BPP_RHS"}
FW_BW = "opt_activation_list_fw_bw"


@pytest.fixture(scope="module")
def datasets() -> dict[str, xr.Dataset]:
    return {case: golden_dataset(case) for case in ANGLE_CASES + [FW_BW]}


@pytest.fixture(scope="module")
def relu(datasets: dict[str, xr.Dataset]) -> xr.Dataset:
    return datasets["opt_relu"]


@pytest.fixture(scope="module")
def fwbw(datasets: dict[str, xr.Dataset]) -> xr.Dataset:
    return datasets[FW_BW]


def as_array(result: xr.DataArray) -> np.ndarray:
    """[time, layer, seed] of a single-model metric result."""
    return result.transpose("time", "layer", "seed", "model").values[..., 0]


# ----------------------------------------------------------------------------------------------------------------
# metrics against the reference
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", list(ANGLE_METRICS))
@pytest.mark.parametrize("case", ANGLE_CASES)
def test_angles_match_reference(datasets: dict[str, xr.Dataset], case: str, metric: str) -> None:
    got = as_array(query(datasets[case], metric).compute())
    ref = golden_angles(case)[ANGLE_METRICS[metric]]
    assert got.shape == ref.shape
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-9, atol=1e-10)
    if case == "opt_relu" and metric != "angle_BPP_WPPT":
        assert (~ok).any()
        assert np.array_equal(np.isnan(got), ~ok)  # 0/0 exactly where the reference has it
    elif case == "opt_bp_bw_only" and metric == "angle_BPP_WPPT":
        assert (~ok).any()
        np.testing.assert_allclose(got[~ok], 0.0, atol=1e-10)  # reference: arccos(1.0000000000000002) = NaN
    else:
        assert ok.all() and not np.isnan(got).any()


def test_angles_per_model_activation(datasets: dict[str, xr.Dataset]) -> None:
    """Two models with different activations in one dataset: phi' follows the activation(layer, model) coord."""
    both = xr.concat(
        [golden_dataset("opt_relu", model_name="relu"), golden_dataset("opt_hard_sigmoid", model_name="hard")],
        dim="model",
    )
    result = query(both, "angle_BPP_RHS").compute()
    for model, case in (("relu", "opt_relu"), ("hard", "opt_hard_sigmoid")):
        got = result.sel(model=model).transpose("time", "layer", "seed").values
        ref = golden_angles(case)["angle_BPP_RHS"]
        ok = ~np.isnan(ref)
        np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-9, atol=1e-10)
    one = query(both, "angle_BPP_RHS", select={"model": "hard"}).compute()
    assert "model" not in one.dims
    xr.testing.assert_allclose(one, result.sel(model="hard"))


# ---- independent direct numpy computations ---------------------------------------------------------------------

NP_PHI = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "logistic": lambda x: 1.0 / (1.0 + np.exp(-x)),
}
NP_DPHI = {
    "tanh": lambda x: 1.0 / np.cosh(x) ** 2,
    "relu": lambda x: (x > 0).astype(float),
    "logistic": lambda x: np.exp(-x) / (1.0 + np.exp(-x)) ** 2,
}


def np_angle(a: np.ndarray, b: np.ndarray) -> float:
    cos = np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def direct_dwpp_angles(case: str, seed: int, forward: str) -> np.ndarray:
    """Angle between the recorded dWPP and the ANN's backprop update, written as plain loops over the golden arrays.

    [row, forward weight layer], NaN in settling rows.
    """
    arrays, params = load_case(case)
    sizes = [int(n) for n in arrays["layers"]]
    n_w = len(sizes) - 1
    acts = params["activation"] if isinstance(params["activation"], list) else [params["activation"]] * n_w
    gl, gbas, gapi = params["gl"], params["gbas"], params["gapi"]
    settling = int(arrays["n_settling_steps"])
    steps = arrays["steps"]
    out = np.full((len(steps), n_w), np.nan)
    for row, step in enumerate(steps):
        if step <= settling:
            continue
        target = arrays[f"s{seed}__target"][step - settling - 1]
        weights = [arrays[f"s{seed}__WPP__layer{i}"][row] for i in range(n_w)]
        rates = [arrays[f"s{seed}__r0"][row]]
        volts = []
        for i in range(n_w):
            c = gbas / (gl + gbas) if i == n_w - 1 else gbas / (gl + gbas + gapi)
            if forward == "ann":
                v = c * (weights[i] @ rates[i])
                r = NP_PHI[acts[i]](v)
            else:
                v = c * arrays[f"s{seed}__vbas__layer{i}"][row]
                r = arrays[f"s{seed}__rP_breve__layer{i}"][row]
            volts.append(v)
            rates.append(r)
        delta = target - volts[-1]
        for i in range(n_w - 1, -1, -1):
            grad = np.outer(delta, rates[i])
            out[row, i] = np_angle(arrays[f"s{seed}__dWPP__layer{i}"][row], grad)
            if i > 0:
                delta = NP_DPHI[acts[i - 1]](volts[i - 1]) * (weights[i].T @ delta)
    return out


@pytest.mark.parametrize("forward", ["ann", "recorded"])
def test_angle_dWPP_BP_matches_direct_computation(fwbw: xr.Dataset, forward: str) -> None:
    result = query(fwbw, "angle_dWPP_BP", args={"forward": forward}).compute()
    assert list(result["layer"].values) == [1, 2, 3]
    for seed in (11, 12):
        expected = direct_dwpp_angles(FW_BW, seed, forward)
        got = result.sel(seed=seed, model="PAL").transpose("time", "layer").values
        assert np.array_equal(np.isnan(got), np.isnan(expected))
        ok = ~np.isnan(expected)
        assert ok.sum() > 20
        np.testing.assert_allclose(got[ok], expected[ok], rtol=1e-9, atol=1e-9)


def test_self_predicting_angles_match_direct_computation(fwbw: xr.Dataset) -> None:
    arrays, _ = load_case(FW_BW)
    arccos_floor = 2e-6  # deg: arccos of a cosine rounded near 1 (np_angle) is only this accurate near 0 deg
    bpi = query(fwbw, "angle_BPI_negBPP").compute()
    wip = query(fwbw, "angle_WIP_WPP").compute()
    assert list(bpi["layer"].values) == [1, 2] and list(wip["layer"].values) == [2, 3]
    for row in (0, 15, len(arrays["steps"]) - 1):
        for seed in (11, 12):
            for i in range(2):
                a, b = arrays[f"s{seed}__BPI__layer{i}"][row], arrays[f"s{seed}__BPP__layer{i}"][row]
                got = bpi.isel(time=row).sel(layer=i + 1, seed=seed).item()
                assert got == pytest.approx(np_angle(a, -b), rel=1e-9, abs=arccos_floor)
                a, b = arrays[f"s{seed}__WIP__layer{i}"][row], arrays[f"s{seed}__WPP__layer{i + 1}"][row]
                got = wip.isel(time=row).sel(layer=i + 2, seed=seed).item()
                assert got == pytest.approx(np_angle(a, b), rel=1e-9, abs=arccos_floor)


def test_mse_error_and_variables(fwbw: xr.Dataset) -> None:
    arrays, _ = load_case(FW_BW)
    steps = fwbw["step"].values
    training = steps > int(arrays["n_settling_steps"])
    mse = query(fwbw, "MSE").compute()
    got = mse.sel(seed=12, model="PAL").values
    assert np.isnan(got[~training]).all()
    np.testing.assert_array_equal(got[training], arrays["s12__MSE"][steps[training] - 31])
    mean = query(fwbw, "mse_mean").compute()
    xr.testing.assert_allclose(mean, mse / 2, check_dim_order=False)
    err = query(fwbw, "error", select={"seed": 11, "neuron": 1, "model": "PAL"}).compute()
    np.testing.assert_array_equal(err.values[training], arrays["s11__error"][steps[training] - 31, 1])
    # any recorded variable by name, or explicitly with `variable:`
    w1 = query(fwbw, "WPP", select={"layer": 2, "seed": 11, "model": "PAL"}).compute()
    w2 = evaluate(Query(variable="WPP", select={"layer": 2, "seed": 11, "model": "PAL"}), fwbw).compute()
    xr.testing.assert_equal(w1, w2)
    np.testing.assert_array_equal(w1.isel(time=5).values[:3, :4], arrays["s11__WPP__layer1"][5])


def test_registry_documents_metrics() -> None:
    names = list_metrics()
    for required in ("angle_BPP_WPPT", "angle_jacobians", "angle_BPP_RHS", "angle_dWPP_BP", "MSE", "mse_mean",
                     "error", "angle_BPI_negBPP", "angle_WIP_WPP"):
        assert required in names
    text = describe_metrics()
    assert "B^PP" in text and "W^PP" in text


# ----------------------------------------------------------------------------------------------------------------
# selection, aggregation and reduction semantics
# ----------------------------------------------------------------------------------------------------------------


def test_selection(relu: xr.Dataset) -> None:
    full = query(relu, "angle_BPP_WPPT").compute()
    r = query(relu, "angle_BPP_WPPT", select={"seed": 12, "layer": [2], "phase": "training"}).compute()
    assert "seed" not in r.dims and list(r["layer"].values) == [2]
    assert (r["phase"].values == "training").all()
    training = np.flatnonzero(full["step"].values > 30)
    xr.testing.assert_allclose(r, full.sel(seed=12, layer=[2]).isel(time=training), rtol=1e-12)
    e1 = query(relu, "angle_BPP_WPPT", select={"epoch": [1]}).compute()
    assert set(e1["step"].values) == {s for s in relu["step"].values if 31 <= s <= 60}
    tr = query(relu, "angle_BPP_WPPT", select={"time": [0.2, 0.5]}).compute()
    assert tr["time"].values.min() == pytest.approx(0.2) and tr["time"].values.max() == pytest.approx(0.5)


def test_per_sample_end_and_last(relu: xr.Dataset) -> None:
    r = query(relu, "angle_jacobians", aggregate="per_sample_end").compute()
    assert list(r["step"].values) == [30, 40, 50, 60, 70, 80, 90]  # S + k*Tp, S = 30, Tp = Tpres/dt = 10
    last = query(relu, "angle_jacobians", aggregate="last").compute()
    assert "time" not in last.dims and last["step"].item() == 90
    full = query(relu, "angle_jacobians").compute()
    xr.testing.assert_allclose(last, full.isel(time=-1), rtol=1e-12)


def test_block_means_and_moving_window(relu: xr.Dataset) -> None:
    full = query(relu, "angle_BPP_WPPT").compute()
    times, values = full["time"].values, full.values
    blocks = query(relu, "angle_BPP_WPPT", aggregate={"every": "2 Tpres"}).compute()  # 0.2 ms blocks
    np.testing.assert_allclose(blocks["time"].values, [0.2, 0.4, 0.6, 0.8, 1.0])
    for k, end in enumerate(blocks["time"].values):
        inside = (times > end - 0.2 + 1e-9) & (times <= end + 1e-9)
        np.testing.assert_allclose(blocks.values[k], values[inside].mean(axis=0), rtol=1e-12)
    # regular records take the coarsen path: check it against the same definition
    ends = query(relu, "angle_BPP_WPPT", aggregate={"per_sample_end": True, "every": 0.3}).compute()
    pse = query(relu, "angle_BPP_WPPT", aggregate="per_sample_end").compute()
    np.testing.assert_allclose(ends["time"].values, [0.3, 0.6, 0.9])
    np.testing.assert_allclose(ends.values[1], pse.values[1:4].mean(axis=0), rtol=1e-12)
    # trailing moving mean over 3 presentations of the presentation ends
    mov = query(relu, "angle_BPP_WPPT", aggregate={"per_sample_end": True, "moving_window": "3 Tpres"}).compute()
    assert list(mov["step"].values) == [50, 60, 70, 80, 90]
    for i in range(5):
        np.testing.assert_allclose(mov.values[i], pse.values[i:i + 3].mean(axis=0), rtol=1e-12)
    final = query(relu, "angle_BPP_WPPT", aggregate={"per_sample_end": True, "moving_window": 0.3, "last": True})
    xr.testing.assert_allclose(final.compute(), mov.isel(time=-1))


def test_moving_window_skips_nan(relu: xr.Dataset) -> None:
    """Seed 11's relu Jacobian angle has NaN records; the window mean skips them."""
    pse = query(relu, "angle_jacobians", aggregate="per_sample_end", select={"seed": 11}).compute()
    mov = query(relu, "angle_jacobians", aggregate={"per_sample_end": True, "moving_window": 0.2},
                select={"seed": 11}).compute()
    assert np.isnan(pse.values).any()
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):  # all-NaN windows stay NaN
        expected = np.stack([np.nanmean(pse.values[i:i + 2], axis=0) for i in range(pse.sizes["time"] - 1)])
    np.testing.assert_allclose(mov.values, expected, rtol=1e-12)


@pytest.mark.parametrize(
    "reduce, numpy_fn",
    [
        ("mean", lambda a: np.nanmean(a, axis=-1)),
        ("std", lambda a: np.nanstd(a, axis=-1)),
        ("median", lambda a: np.nanmedian(a, axis=-1)),
        ("min", lambda a: np.nanmin(a, axis=-1)),
        ("max", lambda a: np.nanmax(a, axis=-1)),
    ],
)
def test_seed_reductions(relu: xr.Dataset, reduce: str, numpy_fn) -> None:
    per_seed = query(relu, "angle_BPP_WPPT", aggregate="last").compute()
    reduced = query(relu.chunk(), "angle_BPP_WPPT", aggregate="last", reduce=reduce)
    assert isinstance(reduced.data, da.Array)
    values = per_seed.transpose("layer", "model", "seed").values
    np.testing.assert_allclose(reduced.compute().transpose("layer", "model").values, numpy_fn(values), rtol=1e-12)


def test_quantile_band(relu: xr.Dataset) -> None:
    per_seed = query(relu, "angle_BPP_WPPT").compute()
    for spec in ({"quantile": [0.1, 0.9]}, [0.1, 0.9], {"how": "quantile", "quantile": [0.1, 0.9]}):
        band = query(relu.chunk(time=10), "angle_BPP_WPPT", reduce=spec)
        assert isinstance(band.data, da.Array)
        band = band.compute()
        assert band.dims == ("time", "layer", "quantile", "model")
        expected = np.quantile(per_seed.transpose("time", "layer", "model", "seed").values, [0.1, 0.9], axis=-1)
        np.testing.assert_allclose(band.transpose("quantile", "time", "layer", "model").values, expected)


# ----------------------------------------------------------------------------------------------------------------
# laziness
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["angle_BPP_WPPT", "angle_jacobians", "angle_BPP_RHS", "angle_dWPP_BP",
                                    "angle_BPI_negBPP", "angle_WIP_WPP", "MSE", "mse_mean", "error", "uP"])
def test_results_are_dask_backed(fwbw: xr.Dataset, metric: str) -> None:
    lazy_ds = fwbw.chunk({"time": 8})
    for aggregate in ("last", {"every": 0.3}, {"per_sample_end": True, "moving_window": "2 Tpres"}):
        lazy = query(lazy_ds, metric, aggregate=aggregate, reduce="mean")
        assert isinstance(lazy.data, da.Array), (metric, aggregate)
        eager = query(fwbw, metric, aggregate=aggregate, reduce="mean")
        xr.testing.assert_allclose(lazy.compute(), eager, rtol=1e-12)


def _synthetic_store(path: Path, n_time: int = 200, chunk: int = 10) -> int:
    """A lazily generated store (dims and coords of the contract) with WPP and BPP; returns its size in bytes."""
    sizes, width, n_seed = [48, 64, 64, 32], 64, 2
    rng = np.random.default_rng(1)
    scale = 1.0 + 1e-3 * da.arange(n_time, chunks=chunk, dtype=float)

    def weights(pre_offset: int) -> da.Array:
        base = np.full((len(sizes), width, width, n_seed, 1), np.nan)
        for l in range(1, len(sizes)):
            p = l + pre_offset
            if 0 <= p < len(sizes):
                base[l, : sizes[l], : sizes[p]] = rng.uniform(-1, 1, (sizes[l], sizes[p], n_seed, 1))
        return base[np.newaxis] * scale[:, None, None, None, None, None]

    dims = ("time", "layer", "neuron", "pre", "seed", "model")
    ds = xr.Dataset(
        {"WPP": (dims, weights(-1)), "BPP": (dims, weights(+1))},
        coords={
            "time": np.arange(1, n_time + 1) * 0.01, "step": ("time", np.arange(1, n_time + 1)),
            "layer": np.arange(len(sizes)), "layer_size": ("layer", sizes), "neuron": np.arange(width),
            "pre": np.arange(width), "seed": [1, 2], "model": np.array(["PAL"], dtype=object),
        },
        attrs={"dt": 0.01, "Tpres": 1.0},
    )
    ds.to_zarr(path, mode="w", consolidated=False)
    return int(ds["WPP"].nbytes + ds["BPP"].nbytes)


def test_query_on_store_larger_than_memory_limit(tmp_path: Path) -> None:
    store = tmp_path / "big.zarr"
    total = _synthetic_store(store)
    memory_limit = total // 5  # the budget this computation must stay under
    assert total > 100e6
    ds = open_store(store)
    final = query(ds, "angle_BPP_WPPT", aggregate="last", reduce="mean")
    whole = query(ds, "angle_BPP_WPPT", aggregate={"every": 2.0}, reduce="mean")  # streams over every record
    assert isinstance(final.data, da.Array) and isinstance(whole.data, da.Array)
    with dask.config.set(scheduler="synchronous"):
        for result in (final, whole):
            tracemalloc.start()
            try:
                value = result.compute()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            print(f"peak {peak / 1e6:.1f} MB for a {total / 1e6:.0f} MB store")
            assert peak < memory_limit, (peak, memory_limit)
            assert np.isfinite(value.values).all()
    # the weights only scale with time, so the angle is constant: the block mean equals the final value
    np.testing.assert_allclose(whole.compute().isel(time=-1).values, final.compute().values, rtol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"metric": "angle_nope"}, ["unknown metric 'angle_nope'", "angle_BPP_WPPT", "angle_jacobians", "WPP"]),
        ({"variable": "WXX"}, ["unknown variable 'WXX'", "uP_breve", "BPP"]),
        ({"metric": "angle_BPP_WPPT", "select": {"seed": 99}}, ["seed 99", "available seeds: 11, 12"]),
        ({"metric": "angle_BPP_WPPT", "select": {"model": "FA"}}, ["model 'FA'", "available models: PAL"]),
        ({"metric": "angle_BPP_WPPT", "select": {"layer": 3}}, ["layer 3", "available layers: 1, 2"]),
        ({"metric": "angle_BPP_WPPT", "select": {"colour": 1}}, ["unknown dim 'colour'", "time", "layer", "seed"]),
        ({"metric": "angle_BPP_WPPT", "select": {"phase": "testing"}}, ["phase 'testing'", "settling, training"]),
        ({"metric": "angle_BPP_WPPT", "select": {"epoch": 7}}, ["epoch [7]", "0, 1, 2"]),
        ({"metric": "angle_BPP_WPPT", "select": {"time": [50, 60]}}, ["no records", "0.01 .. 0.9"]),
        ({"metric": "angle_BPP_WPPT", "args": {"foo": 1}}, ["no argument 'foo'", "(none)"]),
        ({"metric": "MSE"}, ["needs MSE", "variables:"]),
        ({"metric": "angle_BPP_WPPT", "reduce": {"how": "mean", "over": ["trial"]}}, ["trial", "dims:"]),
        ({"metric": "angle_BPP_WPPT", "aggregate": "final"}, ["unknown aggregation 'final'", "per_sample_end"]),
        ({"metric": "angle_BPP_WPPT", "aggregate": {"evry": 1}}, ["unknown key", "moving_window"]),
        ({"metric": "angle_BPP_WPPT", "aggregate": {"every": "3 years"}}, ["cannot read duration"]),
        ({"metric": "angle_BPP_WPPT", "reduce": "average"}, ["reduce.how", "quantile"]),
        ({"metric": "angle_BPP_WPPT", "aggregate": {"moving_window": 5}}, ["longer than the 32 selected records"]),
    ],
)
def test_bad_queries_list_what_is_available(relu: xr.Dataset, kwargs: dict, fragments: list[str]) -> None:
    kwargs = dict(kwargs)
    metric = kwargs.pop("metric", None)
    with pytest.raises(QueryError) as info:
        query(relu, metric, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_bad_metric_argument(fwbw: xr.Dataset) -> None:
    with pytest.raises(QueryError, match="forward must be 'ann' or 'recorded'"):
        query(fwbw, "angle_dWPP_BP", args={"forward": "x"})


def test_bad_query_file(tmp_path: Path) -> None:
    path = tmp_path / "q.yaml"
    path.write_text("queries:\n  a:\n    metric: angle_BPP_WPPT\n    agregate: last\n")
    with pytest.raises(QueryError, match="queries.a.agregate: unknown key; allowed keys: metric, variable, args"):
        load_queries(path)
    path.write_text("a:\n  metric: MSE\n")
    with pytest.raises(QueryError, match="key 'queries'"):
        load_queries(path)


# ----------------------------------------------------------------------------------------------------------------
# files: YAML queries, saving, table
# ----------------------------------------------------------------------------------------------------------------

QUERY_FILE = """
queries:
  final_alignment:
    metric: angle_BPP_WPPT
    select: {phase: training}
    aggregate: last
    reduce: {quantile: [0.1, 0.9]}
  jacobian_trace:
    metric: angle_jacobians
    aggregate: {per_sample_end: true, moving_window: 2 Tpres}
    reduce: mean
  update_alignment:
    metric: angle_dWPP_BP
    args: {forward: ann}
    select: {epoch: 2}
    aggregate: last
    reduce: mean
  loss:
    metric: mse_mean
    aggregate: {every: 0.3}
    reduce: median
  hidden_weights:
    variable: WPP
    select: {layer: 1, seed: 11, neuron: 0}
    aggregate: last
"""


@pytest.fixture(scope="module")
def fwbw_store(tmp_path_factory: pytest.TempPathFactory, fwbw: xr.Dataset) -> Path:
    path = tmp_path_factory.mktemp("store") / "fwbw.zarr"
    encoding = {v: {"chunks": (10, *fwbw[v].shape[1:])} for v in fwbw.data_vars}
    fwbw.to_zarr(path, consolidated=False, encoding=encoding)
    return path


@pytest.fixture(scope="module")
def file_results(tmp_path_factory: pytest.TempPathFactory, fwbw_store: Path) -> dict[str, xr.DataArray]:
    qfile = tmp_path_factory.mktemp("queries") / "analysis.yaml"
    qfile.write_text(QUERY_FILE)
    return run_query_file(str(fwbw_store), qfile)


def test_query_file_runs_on_a_store(
    file_results: dict[str, xr.DataArray], fwbw: xr.Dataset, fwbw_store: Path
) -> None:
    assert list(file_results) == ["final_alignment", "jacobian_trace", "update_alignment", "loss", "hidden_weights"]
    for name, result in file_results.items():
        assert isinstance(result.data, da.Array), name
        assert result.name == name
    band = file_results["final_alignment"].compute()
    assert band.dims == ("layer", "quantile", "model") and band.attrs["units"] == "deg"
    assert json.loads(band.attrs["query"])["metric"] == "angle_BPP_WPPT"
    eager = query(fwbw, "angle_BPP_WPPT", select={"phase": "training"}, aggregate="last", reduce=[0.1, 0.9])
    xr.testing.assert_allclose(band, eager.rename("final_alignment"))
    assert file_results["jacobian_trace"].dims == ("time", "layer", "model")
    assert file_results["update_alignment"].dims == ("layer", "model")
    assert file_results["hidden_weights"].dims == ("pre", "model")
    # same result from an open Dataset and from notebook-style calls
    ds = open_store(fwbw_store)
    again = evaluate(Query(metric="mse_mean", aggregate={"every": 0.3}, reduce="median"), ds, name="loss")
    xr.testing.assert_identical(again.compute(), file_results["loss"].compute())


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_save_and_load_results(tmp_path: Path, file_results: dict[str, xr.DataArray], suffix: str) -> None:
    out = save_results(file_results, tmp_path / f"results{suffix}")
    back = load_results(out)
    assert list(back) == list(file_results)
    for name, result in file_results.items():
        result = result.compute()
        got = back[name]
        assert got.dims == result.dims
        np.testing.assert_allclose(got.values, result.values, equal_nan=True)
        for dim in result.dims:
            np.testing.assert_array_equal(got[dim].values.astype(result[dim].dtype), result[dim].values)
        assert got.attrs["metric"] == result.attrs["metric"]


def test_save_csv(tmp_path: Path, file_results: dict[str, xr.DataArray]) -> None:
    out = save_results(file_results, tmp_path / "results.csv")
    table = pd.read_csv(out)
    assert {"query", "metric", "layer", "quantile", "model", "time", "value"} <= set(table.columns)
    band = file_results["final_alignment"].compute()
    rows = table[(table["query"] == "final_alignment") & (table["layer"] == 2) & (table["quantile"] == 0.9)]
    assert rows["value"].item() == pytest.approx(band.sel(layer=2, quantile=0.9, model="PAL").item(), rel=1e-12)
    assert len(table[table["query"] == "jacobian_trace"]) == file_results["jacobian_trace"].size
    with pytest.raises(QueryError, match=".zarr, .nc, .csv"):
        save_results(file_results, tmp_path / "results.xlsx")


def test_format_table(file_results: dict[str, xr.DataArray]) -> None:
    text = format_table(file_results)
    lines = text.splitlines()
    header = lines[0].split()
    assert header[:2] == ["query", "metric"] and header[-2:] == ["value", "units"]
    assert {"layer", "quantile", "model", "time"} <= set(header)
    band = file_results["final_alignment"].compute()
    value = format(band.sel(layer=1, quantile=0.1, model="PAL").item(), ".6g")
    assert any(line.startswith("final_alignment") and value in line and "deg" in line for line in lines)
    assert sum(line.startswith("update_alignment") for line in lines) == 3  # layers 1..3
    assert sum(line.startswith("jacobian_trace") for line in lines) == file_results["jacobian_trace"].size
    short = format_table(file_results, max_rows=8)
    assert "jacobian_trace (angle_jacobians): 12 values (time: 6, layer: 2, model: 1), not tabulated" in short
    assert format_table({}) == "(no results)"
