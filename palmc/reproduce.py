"""Reproduce the paper's figures from the shipped experiments (``palmc reproduce FIGURE``).

For a figure (``fig3abc``, ``fig3def``, ``fig4ab``, ``fig6``, and the Yin-Yang task ``yinyang``: the files
``experiments/<figure>.yaml``)
:func:`reproduce` simulates the experiment into a store (an existing complete store of the same experiment is
reused, an interrupted one resumed), evaluates the figure's metrics with the query layer, writes the figure's
interactive plots (one offline HTML file) and a Markdown report with the key numbers, beside the published ones
where the repository ships them (``experiments/published/``). ``short=True`` runs a shortened copy of the
experiment (a couple of epochs) as a smoke test; its numbers are compared with the published values at the same
record when those exist.

Variants of a parameter sweep (``fig6``) are analysed one by one: each is cut out of the store with
:func:`variant_dataset` (its own records only, by the query layer's variant selection).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["FIGURES", "Figure", "FigureError", "Short", "ensure_store", "figure_experiment", "load_published",
           "reproduce", "variant_dataset"]


def shipped_experiments() -> Path:
    """The folder of the paper's experiment files: the repository's ``experiments/`` in a source checkout (and an
    editable install), else the copy installed with the package (``palmc.experiments``: pyproject maps that
    package to the same folder, so there is one source)."""
    source = Path(__file__).resolve().parent.parent / "experiments"
    if (source / "quickstart.yaml").is_file():
        return source
    from importlib.util import find_spec

    spec = find_spec("palmc.experiments")  # a namespace package: data files only
    if spec is None or not spec.submodule_search_locations:
        return source  # neither: the error names the missing file there
    return Path(list(spec.submodule_search_locations)[0])


EXPERIMENTS = shipped_experiments()
ANGLES = ("angle_BPP_WPPT", "angle_BPP_RHS")
ANGLE_NAMES = {"angle_BPP_WPPT": "∠(Bᴾᴾₗ, (Wᴾᴾₗ₊₁)ᵀ)", "angle_BPP_RHS": "∠(Bᴾᴾₗ, φ'ₗ (Wᴾᴾₗ₊₁)ᵀ φ'ₗ₊₁)"}
CURVE_POINTS = 400  # records per plotted curve: enough for the shape, keeps the HTML small

Log = Callable[[str], None]


class FigureError(ValueError):
    """A figure that cannot be reproduced as asked (unknown name, missing experiment file)."""


@dataclass(frozen=True)
class Short:
    """The shortened copy of an experiment run by ``--short``: fewer epochs, optionally a smaller data set and
    fewer seeds. Recording intervals shrink with the data set, so a short run still has several records."""

    epochs: int
    dataset_size: int | None = None
    seeds: int | None = None
    settling_time: float | None = None  # ms

    def describe(self) -> str:
        parts = [f"{self.epochs} epochs"]
        if self.settling_time is not None:
            parts.append(f"{self.settling_time:g} ms of settling")
        if self.dataset_size is not None:
            parts.append(f"{self.dataset_size} samples per epoch (recording intervals scaled alike)")
        if self.seeds is not None:
            parts.append(f"the first {self.seeds} seeds")
        return ", ".join(parts)


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    summary: str  # what the figure shows, for the report
    kind: Literal["angles", "mse", "variants", "accuracy"]  # which analysis: Fig. 3, Fig. 4, Fig. 6, Yin-Yang
    short: Short


FIGURES: dict[str, Figure] = {f.name: f for f in (
    Figure("fig3abc", "Fig. 3a-c: PAL aligns the feedback weights (weights in [-1, 1])",
           "PAL learns Bᴾᴾ in a 5-20-10-20-5 network whose forward weights stay fixed; the angles between Bᴾᴾ "
           "and (Wᴾᴾ)ᵀ, and between Bᴾᴾ and PAL's fixed point φ' (Wᴾᴾ)ᵀ φ', fall during training.",
           "angles", Short(epochs=2)),
    Figure("fig3def", "Fig. 3d-f: PAL aligns the feedback weights (weights in [-5, 5], saturating regime)",
           "As Fig. 3a-c with larger weights, so the logistic units saturate: Bᴾᴾ aligns better with PAL's "
           "fixed point φ' (Wᴾᴾ)ᵀ φ' than with (Wᴾᴾ)ᵀ.",
           "angles", Short(epochs=2)),
    Figure("fig4ab", "Fig. 4a-b: teacher-student learning with BP, FA and PAL (1-1-1 network)",
           "A student learns a teacher's forward weights from the output error, with the feedback weight Bᴾᴾ "
           "kept equal to Wᴾᴾ (BP), fixed (FA) or learned (PAL): the output error over training.",
           "mse", Short(epochs=2, dataset_size=10, settling_time=10.0)),  # the teacher's settling is costly
    Figure("fig6", "Fig. 6: PAL's alignment for slower noise, with and without prospective voltages",
           "PAL's final alignment for noise time scales of 10, 100 and 1000 dt (presentation times, filters and "
           "learning rates rescaled with them), with prospective (taur = 1) or plain (taur = 0) voltages.",
           "variants", Short(epochs=2, dataset_size=2, seeds=3, settling_time=10.0)),
    Figure("yinyang", "Yin-Yang: BP, FA and PAL microcircuits learn a real classification task",
           "A 4-H-3 microcircuit learns the Yin-Yang dataset (Kriener, Goeltz, Petrovici 2022: 5000 training and "
           "1000 test samples, classes yin, yang and dot) with BP, FA and PAL feedback: test accuracy over training "
           "and at the end, beside a linear classifier and a backprop ANN.",
           "accuracy", Short(epochs=2, dataset_size=500, seeds=2)),
)}

PUBLISHED_YINYANG = (
    ("ANN 4-120-3 (backprop, Adam, 300 epochs)", 98.7, 0.3),
    ("shallow network (linear classifier)", 64.3, 0.2),
)
"""Published Yin-Yang test accuracies (%, mean ± std over 20 runs; README of lkriener/yin_yang_data_set)."""


# ----------------------------------------------------------------------------------------------------------------
# experiment and store
# ----------------------------------------------------------------------------------------------------------------


def figure_experiment(figure: str, *, short: bool = False, experiments_dir: Path | None = None) -> Any:
    """The validated experiment of ``figure`` (its shortened copy with ``short``)."""
    from palmc.schema import load_experiment, validate_experiment

    spec = _figure(figure)
    path = (experiments_dir or EXPERIMENTS) / f"{figure}.yaml"
    if not path.exists():
        raise FigureError(f"figure {figure!r} needs the experiment file {path}, which does not exist")
    exp = load_experiment(path)
    if not short:
        return exp
    return validate_experiment(_shortened(exp.to_dict(), spec.short), f"{path} (shortened by --short)")


def _figure(name: str) -> Figure:
    if name not in FIGURES:
        raise FigureError(f"unknown figure {name!r}; figures: {', '.join(FIGURES)}")
    return FIGURES[name]


def _shortened(data: dict[str, Any], short: Short) -> dict[str, Any]:
    """The experiment settings with fewer epochs (and samples, seeds); swept values of those fields too."""
    sweep = data.get("sweep") or {}
    swept = {**(sweep.get("zip") or {}), **(sweep.get("grid") or {})}
    size = data["input"]["dataset_size"]
    scale = 1.0 if short.dataset_size is None else short.dataset_size / size

    def shrink_every(every: int) -> int:  # keep about as many records per epoch as the full run
        return max(1, int(every * scale))

    data["name"] = f"{data['name']}-short"
    data["input"]["epochs"] = short.epochs
    dataset = data["input"].get("dataset")
    if short.dataset_size is not None and dataset is not None and dataset["source"] == "yinyang":
        scale = short.dataset_size / dataset["train_size"]  # task supervised: the training set is the epoch
        dataset["train_size"] = short.dataset_size
        dataset["test_size"] = min(dataset["test_size"], short.dataset_size)
    elif short.dataset_size is not None:
        data["input"]["dataset_size"] = short.dataset_size
    if short.seeds is not None:
        data["seeds"] = data["seeds"][: short.seeds]
    if short.settling_time is not None:
        data["dynamics"]["settling_time"] = short.settling_time
    data["recording"]["every"] = shrink_every(data["recording"]["every"])
    if dataset is not None:  # task supervised: at least one record per epoch of the short run
        steps_per_epoch = dataset["train_size"] * round(data["dynamics"]["Tpres"] / data["dynamics"]["dt"])
        data["recording"]["every"] = min(data["recording"]["every"], steps_per_epoch)
    for path, values in swept.items():
        if path == "input.epochs":
            values[:] = [short.epochs] * len(values)
        elif path == "input.dataset_size" and short.dataset_size is not None:
            values[:] = [short.dataset_size] * len(values)
        elif path == "recording.every":
            values[:] = [shrink_every(v) for v in values]
    data["description"] = f"{data.get('description') or ''} Shortened for a smoke test: {short.describe()}.".strip()
    return data


def ensure_store(exp: Any, store: Path, *, workers: int | None, progress: bool, overwrite: bool,
                 engine: str | None, log: Log) -> str:
    """Make ``store`` hold the complete simulation of ``exp``: reuse it if complete, resume it if interrupted,
    simulate it if absent (or ``overwrite``). Returns a sentence saying which, with the wall time."""
    from palmc.api import simulate, store_status
    from palmc.plan import make_plan
    from palmc.store.writer import StoreError, read_attrs

    resume = False
    if store.exists() and not overwrite:
        try:
            attrs = read_attrs(store)
        except Exception as err:  # noqa: BLE001 - any unreadable store is refused the same way
            raise StoreError(f"{store} exists but is not a palmc store ({err}); "
                             "pass --overwrite or choose another --store") from err
        if attrs.get("experiment_sha256") != make_plan(exp, workers=1).experiment_sha256:
            raise StoreError(f"{store} holds another experiment ({attrs.get('name', '?')!r}), not {exp.name!r}; "
                             "pass --overwrite to replace it or choose another --store")
        status = store_status(attrs)
        if status == "complete":
            log(f"reusing the complete store {store}")
            return f"reused the complete store (simulated {attrs.get('started', '?')} .. {attrs.get('ended', '?')})"
        if status == "running":
            raise StoreError(f"{store} is being written by process {attrs.get('pid', '?')} on "
                             f"{attrs.get('host', '?')}; wait for it or choose another --store")
        if status != "interrupted":
            raise StoreError(f"{store} has status {status!r}; pass --overwrite to simulate it again")
        resume = True
    log(f"{'resuming' if resume else 'simulating'} {exp.name} into {store}")
    start = time.perf_counter()
    simulate(exp, store, overwrite=overwrite and not resume, resume=resume, engine=engine, progress=progress,
             workers=workers)
    wall = time.perf_counter() - start
    return f"{'resumed' if resume else 'simulated'} in {wall:.1f} s wall time"


# ----------------------------------------------------------------------------------------------------------------
# analysis helpers
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Section:
    """What one figure's analysis produced: report lines, tidy numbers, plot panels."""

    lines: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    panels: list[Any] = field(default_factory=list)
    agrees: bool | None = None  # None: nothing published to compare with


def variant_dataset(ds: xr.Dataset, k: int) -> xr.Dataset:
    """Variant ``k`` of a sweep store as a plain store: only the records it has (the store's time axis is the
    union of all variants' records; a variant's others are NaN padding), without the per-variant coordinates."""
    from palmc.query.variants import select_variants

    per_variant = [c for c in ds.coords if ds[c].dims == ("variant",)] + ["variant"]
    sub = select_variants(ds, k)
    return sub.drop_vars([c for c in per_variant if c in sub.coords])


_BOOKKEEPING = ("variant", "variant_label", "last_record", "presentation_steps", "record_every_steps", "steps_total")


def _variants(ds: xr.Dataset, exp: Any = None) -> list[tuple[str, dict[str, Any], xr.Dataset]]:
    """(label, swept values, dataset) per variant; one unlabelled entry for a store without variants.

    The label names the first zipped field and the grid fields of the experiment's sweep (e.g. "tauxi=1.0,
    taur=0.0"): the other zipped fields follow the first, and the store's full label lists them all."""
    if "variant" not in ds.dims:
        return [("", {}, ds)]
    swept = [str(c) for c in ds.coords if ds[c].dims == ("variant",) and c not in _BOOKKEEPING]
    sweep = getattr(exp, "sweep", None)
    short = [p.split(".")[-1] for p in [*list(sweep.zip)[:1], *sweep.grid]] if sweep is not None else []
    out = []
    for k in range(ds.sizes["variant"]):
        values = {c: getattr(v, "item", lambda v=v: v)() for c in swept for v in [ds[c].values[k]]}
        if short and all(name in values for name in short):
            label = ", ".join(f"{name}={values[name]}" for name in short)
        else:
            label = str(ds["variant_label"].values[k]) if "variant_label" in ds.coords else f"variant {k}"
        out.append((label, values, variant_dataset(ds, k)))
    return out


def _thin(ds: xr.Dataset, steps: np.ndarray | None = None, points: int = CURVE_POINTS) -> xr.Dataset:
    """The records at ``steps`` (those the store has) plus the last one, or every k-th record ending on the last:
    metrics are computed on these records only, which bounds the cost of a curve over a long run."""
    n = ds.sizes["time"]
    if steps is not None:
        idx = np.flatnonzero(np.isin(np.asarray(ds["step"].values), steps))
        return ds.isel(time=np.union1d(idx, [n - 1]))
    k = max(1, int(np.ceil(n / points)))
    return ds.isel(time=slice((n - 1) % k, None, k))


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and std (ddof=0, as the published std) over the finite values."""
    finite = values[np.isfinite(values)]
    return (float(finite.mean()), float(finite.std())) if finite.size else (np.nan, np.nan)


def _pm(mean: float, std: float, fmt: str = ".2f") -> str:
    return f"{mean:{fmt}} ± {std:{fmt}}"


def _compute(da: xr.DataArray) -> xr.DataArray:
    with warnings.catch_warnings():  # NaN padding / settling records give all-NaN slices
        warnings.simplefilter("ignore", RuntimeWarning)
        return da.compute()


def _last_epoch_line(ds: xr.Dataset) -> str:
    steps = int(ds["step"].values[-1])
    epoch = f", epoch {int(ds['epoch'].values[-1])}" if "epoch" in ds.coords else ""
    return f"step {steps}{epoch}"


# ----------------------------------------------------------------------------------------------------------------
# Fig. 3: angles beside the published values
# ----------------------------------------------------------------------------------------------------------------


def _published_to(pub_curve: pd.DataFrame, metric: str, layer: int, final_step: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps and mean angles of the published curve of (``metric``, ``layer``) up to the run's last step; the
    published curve is sampled more sparsely than palmc records, so when the run ends between two of its samples
    (a ``--short`` run) its value at the end is interpolated from them: the overlay then reaches the run's end."""
    if pub_curve.empty:
        return np.array([]), np.array([])
    own = pub_curve[(pub_curve["metric"] == metric) & (pub_curve["layer"] == layer)].sort_values("step")
    steps, means = own["step"].to_numpy(dtype=float), own["mean_deg"].to_numpy(dtype=float)
    keep = steps <= final_step
    if keep.any() and (steps > final_step).any() and steps[keep][-1] < final_step:
        return (np.append(steps[keep], final_step), np.append(means[keep], np.interp(final_step, steps, means)))
    return steps[keep], means[keep]


def load_published(figure: str, experiments_dir: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Published per-seed angles and mean curves of ``figure`` (see ``experiments/published/extract_fig3.py``)."""
    base = (experiments_dir or EXPERIMENTS) / "published"
    per_seed, curves = base / f"{figure}_angles_per_seed.csv", base / f"{figure}_angle_curves.csv"
    if not per_seed.exists():
        return None
    return pd.read_csv(per_seed), (pd.read_csv(curves) if curves.exists() else pd.DataFrame())


def _angles(ds: xr.Dataset, figure: str, experiments_dir: Path | None) -> Section:
    import holoviews as hv

    from palmc.plots import plot_result, value_dimension
    from palmc.plots.curves import TIME
    from palmc.query import query

    published = load_published(figure, experiments_dir)
    pub_seed, pub_curve = published if published is not None else (pd.DataFrame(), pd.DataFrame())
    final_step = int(ds["step"].values[-1])
    section = Section()
    verdicts: list[bool] = []
    section.lines += [f"Final values: the last record ({_last_epoch_line(ds)}), mean ± std (ddof 0) over "
                      f"{ds.sizes['seed']} seeds. Published: the reference code's angles at the same step."]
    curve_steps = pub_curve["step"].unique() if not pub_curve.empty else None
    thin = _thin(ds, curve_steps)
    for metric in ANGLES:
        final = _compute(query(ds, metric, aggregate="last"))  # (layer, seed, model)
        pub = pub_seed[(pub_seed["metric"] == metric) & (pub_seed["step"] == final_step)] if len(pub_seed) else pub_seed
        section.lines += ["", f"### {ANGLE_NAMES[metric]} (`{metric}`)", ""]
        if len(pub):
            section.lines += ["| model | layer | palmc (deg) | published (deg) | abs diff of means | within published "
                              "std | max per-seed abs diff |", "|---|---|---|---|---|---|---|"]
        else:
            section.lines += ["| model | layer | palmc (deg) | published (deg) |", "|---|---|---|---|"]
        for model in final["model"].values:
            for layer in final["layer"].values:
                values = final.sel(model=model, layer=layer)
                mean, std = _mean_std(np.asarray(values.values))
                row: dict[str, Any] = {"quantity": metric, "model": str(model), "layer": int(layer),
                                       "palmc_mean": mean, "palmc_std": std}
                ref = pub[pub["layer"] == int(layer)].set_index("seed")["angle_deg"]
                common = [s for s in values["seed"].values if s in ref.index]
                if len(ref) and common:
                    pmean, pstd = _mean_std(ref.to_numpy())
                    diff = abs(mean - pmean)
                    seed_diff = float(np.max(np.abs(values.sel(seed=common).values - ref.loc[common].to_numpy())))
                    ok = bool(diff <= pstd)
                    verdicts.append(ok)
                    row |= {"published_mean": pmean, "published_std": pstd, "abs_mean_diff": diff,
                            "within_published_std": ok, "max_seed_abs_diff": seed_diff}
                    section.lines.append(f"| {model} | {layer} | {_pm(mean, std)} | {_pm(pmean, pstd)} | "
                                         f"{diff:.2g} | {'yes' if ok else 'NO'} | {seed_diff:.2g} |")
                else:
                    section.lines.append(f"| {model} | {layer} | {_pm(mean, std)} | n/a |")
                section.rows.append(row)
        # curves: palmc (mean and min-max band over seeds) with the published mean dashed
        curve = _compute(query(thin, metric))
        for layer in curve["layer"].values:
            panel = plot_result(curve.sel(layer=layer), title=f"{ANGLE_NAMES[metric]}, layer {layer}", band="minmax")
            steps, means = _published_to(pub_curve, metric, int(layer), final_step)
            if len(steps):
                t = steps * float(ds.attrs["dt"])
                ydim = value_dimension(curve, name=metric)  # the palmc curves' axes, so the overlay shares them
                published_curve = hv.Curve((t, means), TIME, ydim, label="published (mean)")
                # an overlay product drops the panel's options (title, size): set them again
                panel = (panel * published_curve.opts(color="black", line_dash="dashed")).opts(
                    title=f"{ANGLE_NAMES[metric]}, layer {layer}", width=460, height=300, show_grid=True,
                    legend_position="right")  # outside the axes, where it hides no curve
            section.panels.append(panel)
    if verdicts:
        section.agrees = all(verdicts)
        n_ok = sum(verdicts)
        section.lines[1:1] = ["", f"**Agreement with the published values: {'yes' if section.agrees else 'NO'}** — "
                              f"|palmc mean - published mean| <= published std in {n_ok} of {len(verdicts)} "
                              "(angle, layer) pairs; the per-seed differences compare the same seeds."]
    else:
        section.lines[1:1] = ["", "No published values at this step (a `--short` run ends at an epoch the "
                              "published data do not keep, or the figure has none)."]
    return section


# ----------------------------------------------------------------------------------------------------------------
# Fig. 4: output error of BP, FA and PAL
# ----------------------------------------------------------------------------------------------------------------


def _mse(ds: xr.Dataset) -> Section:
    from palmc.plots import plot_result
    from palmc.query import query

    section = Section()
    last_epoch = int(ds["epoch"].values[-1])
    per_seed = _compute(query(ds, "MSE", select={"epoch": last_epoch}).mean("time"))  # (seed, model)
    angle = _compute(query(ds, "angle_BPP_WPPT", aggregate="last")) if "BPP" in ds else None
    section.lines += [
        f"MSE (the recorded sum of squared output errors) averaged over the records of the last epoch "
        f"({last_epoch}), then mean ± std (ddof 0) over {ds.sizes['seed']} seeds; the final angle between "
        "Bᴾᴾ and (Wᴾᴾ)ᵀ (0 deg: same sign) likewise. No published numbers are shipped for this figure.",
        "", "| model | final MSE | median over seeds | min | max | final ∠(Bᴾᴾ, (Wᴾᴾ)ᵀ) (deg) |",
        "|---|---|---|---|---|---|",
    ]
    for model in per_seed["model"].values:
        values = np.asarray(per_seed.sel(model=model).values, dtype=float)
        mean, std = _mean_std(values)
        row: dict[str, Any] = {"quantity": "MSE_last_epoch", "model": str(model), "palmc_mean": mean,
                               "palmc_std": std}
        text = "n/a"
        if angle is not None:
            amean, astd = _mean_std(np.asarray(angle.sel(model=model).values, dtype=float))
            text = _pm(amean, astd, ".1f")
            section.rows.append({"quantity": "angle_BPP_WPPT", "model": str(model), "layer": 1,
                                 "palmc_mean": amean, "palmc_std": astd})
        section.rows.append(row)
        section.lines.append(f"| {model} | {_pm(mean, std, '.3g')} | {np.nanmedian(values):.3g} | "
                             f"{np.nanmin(values):.3g} | {np.nanmax(values):.3g} | {text} |")
    training = {"phase": "training"}
    section.panels.append(plot_result(_compute(query(ds, "MSE", select=training)), band="quantile",
                                      title="output error MSE (median, 10-90% over seeds)"))
    for name, sel, title in (("WPP", {"layer": 2}, "Wᴾᴾ₂ (hidden → output)"),
                             ("BPP", {"layer": 1}, "Bᴾᴾ₁ (output → hidden)")):
        if name in ds:
            da = query(ds, variable=name, select={**training, **sel, "neuron": 0, "pre": 0})
            section.panels.append(plot_result(_compute(da), band="minmax", title=f"{title}, mean and min-max"))
    return section


# ----------------------------------------------------------------------------------------------------------------
# Fig. 6: final alignment per variant of the sweep
# ----------------------------------------------------------------------------------------------------------------


def _variant_section(ds: xr.Dataset, exp: Any) -> Section:
    import holoviews as hv

    from palmc.plots import model_colors
    from palmc.query import query

    section = Section()
    variants = _variants(ds, exp)
    protocols = [v.protocol() for _, v in exp.variants()] if hasattr(exp, "variants") else []
    colors = model_colors([label for label, _, _ in variants])
    section.lines += [
        f"Final values (the last record of each variant), mean ± std (ddof 0) over {ds.sizes['seed']} seeds; "
        "the curves in the plots are means over seeds; every swept value is in `numbers.csv`. No published numbers are shipped for this figure.", "",
        "| variant | model | layer | " + " | ".join(f"`{m}` (deg)" for m in ANGLES) + " |",
        "|---" * (3 + len(ANGLES)) + "|",
    ]
    curves: dict[tuple[str, int], list[Any]] = {}
    for k, (label, values, sub) in enumerate(variants):
        # a variant has few records (once per epoch): load the thinned records once, then every query is in memory
        thin = _thin(sub)[[v for v in ("WPP", "BPP", "vbas") if v in sub]].load()
        finals = {m: _compute(query(thin, m, aggregate="last")) for m in ANGLES}
        first = finals[ANGLES[0]]
        for model in first["model"].values:
            for layer in first["layer"].values:
                cells = []
                for m in ANGLES:
                    mean, std = _mean_std(np.asarray(finals[m].sel(model=model, layer=layer).values, dtype=float))
                    cells.append(_pm(mean, std))
                    section.rows.append({"quantity": m, "variant": label, **values, "model": str(model),
                                         "layer": int(layer), "palmc_mean": mean, "palmc_std": std})
                section.lines.append(f"| {label} | {model} | {layer} | " + " | ".join(cells) + " |")
        # training progress in epochs, so that variants with different presentation times share the x axis
        steps = np.asarray(thin["step"].values, dtype=float)
        if k < len(protocols):
            epochs = (steps - protocols[k].settling_steps) / protocols[k].steps_per_epoch
        else:
            epochs = steps / steps[-1]
        training = epochs >= 0  # from the end of settling on
        for m in ANGLES:  # mean over seeds only: six overlapping bands would hide the curves
            mean = _compute(query(thin, m, reduce="mean")).mean("model")
            for layer in mean["layer"].values:
                curves.setdefault((m, int(layer)), []).append(
                    hv.Curve((epochs[training], mean.sel(layer=layer).values[training]), "epoch", "angle", label=label)
                    .opts(color=colors[label], line_width=2, tools=["hover"]))
    for (m, layer), elements in curves.items():
        section.panels.append(hv.Overlay(elements).opts(
            title=f"{ANGLE_NAMES[m]}, layer {layer}", width=460, height=300, show_grid=True,
            legend_position="right", xlabel="training progress (epochs)", ylabel="angle (deg)"))
    return section


# ----------------------------------------------------------------------------------------------------------------
# Yin-Yang: accuracy of BP, FA and PAL
# ----------------------------------------------------------------------------------------------------------------


def _accuracy(ds: xr.Dataset) -> Section:
    from palmc.plots import accuracy_curves, model_colors
    from palmc.query import query

    section = Section()
    final_epoch = int(ds["eval_epoch"].values[-1])
    finals = {name: 100 * _compute(query(ds, name).isel(eval_epoch=-1)) for name in ("test_accuracy", "train_accuracy")}
    section.lines += [
        f"Accuracy after the last epoch ({final_epoch}), in %, mean ± std (ddof 0) over {ds.sizes['seed']} seeds: "
        "a frozen copy of each network (plasticity, nudging and noise off) classifies every test sample (and the "
        "first training samples) by the argmax of its output rates at the end of the presentation. The angle "
        "between the feedback weights and the transposed forward weights (0 deg for BP) is that of the last "
        "record.", "",
        "| model | test accuracy (%) | min over seeds | max | training accuracy (%) | final ∠(B^PP, (W^PP)^T) (deg) |",
        "|---|---|---|---|---|---|",
    ]
    recorded = "BPP" in ds and "WPP" in ds and (ds["phase"] == "training").any()
    angle = _compute(query(ds, "angle_BPP_WPPT", aggregate="last")) if recorded else None
    for model in finals["test_accuracy"]["model"].values:
        test = np.asarray(finals["test_accuracy"].sel(model=model).values, dtype=float)
        train = np.asarray(finals["train_accuracy"].sel(model=model).values, dtype=float)
        mean, std = _mean_std(test)
        train_mean, train_std = _mean_std(train)
        section.rows.append({"quantity": "test_accuracy_percent", "model": str(model), "palmc_mean": mean,
                             "palmc_std": std})
        section.rows.append({"quantity": "train_accuracy_percent", "model": str(model), "palmc_mean": train_mean,
                             "palmc_std": train_std})
        angle_text = "n/a"
        if angle is not None:
            angle_mean, angle_std = _mean_std(np.asarray(angle.sel(model=model).values, dtype=float).ravel())
            angle_text = _pm(angle_mean, angle_std, ".1f")
            section.rows.append({"quantity": "angle_BPP_WPPT", "model": str(model), "layer": 1,
                                 "palmc_mean": angle_mean, "palmc_std": angle_std})
        section.lines.append(f"| {model} | {_pm(mean, std)} | {np.nanmin(test):.2f} | {np.nanmax(test):.2f} | "
                             f"{_pm(train_mean, train_std)} | {angle_text} |")
    section.lines += ["", "Published test accuracies on the same splits (other networks, for scale):", "",
                      "| network | test accuracy (%) |", "|---|---|"]
    for name, mean, std in PUBLISHED_YINYANG:
        section.lines.append(f"| {name} | {_pm(mean, std, '.1f')} |")
        section.rows.append({"quantity": "published_test_accuracy_percent", "model": name, "published_mean": mean,
                             "published_std": std})
    colors = model_colors(ds["model"].values)
    for name in ("test_accuracy", "train_accuracy"):
        section.panels.append(accuracy_curves(query(ds, name), colors=colors,
                                              title=f"{name.replace('_', ' ')} (mean and min-max over seeds)"))
    if "MSE" in ds and (ds["phase"] == "training").any():  # a short run may end before its first record
        from palmc.plots import plot_result

        section.panels.append(plot_result(_compute(query(ds, "MSE", select={"phase": "training"})), band="quantile",
                                          title="output error MSE while training (median, 10-90% over seeds)"))
    return section


# ----------------------------------------------------------------------------------------------------------------
# report and plots
# ----------------------------------------------------------------------------------------------------------------


def _save_html(panels: list[Any], path: Path, title: str, intro: str) -> Path:
    """The panels as one offline HTML page, saved the way ``palmc plot`` saves its dashboard (bokeh's JavaScript
    and panel's stylesheets inlined), so it opens without a network."""
    import holoviews as hv
    import panel as pn

    from palmc.plots import render_bokeh
    from palmc.plots import save_page

    layout = hv.Layout(panels).cols(3 if len(panels) % 3 == 0 else 2).opts(shared_axes=False)
    page = pn.Column(pn.pane.Markdown(f"# {title}\n{intro}", disable_anchors=True, width=1000),
                     pn.pane.Bokeh(render_bokeh(layout)))
    return save_page(page, path, title)


def reproduce(
    figure: str,
    outdir: str | Path | None = None,
    *,
    short: bool = False,
    store: str | Path | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    engine: str | None = None,
    experiments_dir: str | Path | None = None,
    log: Log = print,
) -> Path:
    """Reproduce ``figure`` and return the path of its Markdown report (``OUTDIR/report.md``).

    ``outdir`` defaults to ``results/<figure>`` (``results/<figure>-short`` with ``short``); ``store`` defaults
    to the experiment's ``output.store`` (``OUTDIR/<figure>-short.zarr`` with ``short``, so a smoke test never
    touches the full store). Beside the report: ``<figure>.html`` (interactive plots) and ``numbers.csv`` (every
    number of the report, tidy). ``log`` receives one line per step (the CLI prints them).
    """
    spec = _figure(figure)
    exp_dir = Path(experiments_dir) if experiments_dir is not None else None
    exp = figure_experiment(figure, short=short, experiments_dir=exp_dir)
    out = Path(outdir) if outdir is not None else Path("results") / exp.name
    out.mkdir(parents=True, exist_ok=True)
    store_path = Path(store) if store is not None else (out / f"{exp.name}.zarr" if short else Path(exp.output.store))
    how = ensure_store(exp, store_path, workers=workers, progress=progress, overwrite=overwrite, engine=engine,
                       log=log)

    from palmc.api import open as open_store

    start = time.perf_counter()
    ds = open_store(store_path)
    if spec.kind == "angles":
        section = _angles(ds, figure, exp_dir)
    elif spec.kind == "mse":
        section = _mse(ds)
    elif spec.kind == "accuracy":
        section = _accuracy(ds)
    else:
        section = _variant_section(ds, exp)
    html = _save_html(section.panels, out / f"{figure}.html", spec.title, spec.summary)
    numbers = out / "numbers.csv"
    pd.DataFrame(section.rows).to_csv(numbers, index=False)
    analysis = time.perf_counter() - start

    n_runs = ds.sizes["seed"] * ds.sizes["model"] * ds.sizes.get("variant", 1)
    lines = [
        f"# {spec.title}{' (short run)' if short else ''}", "", spec.summary, "",
        f"- experiment: `experiments/{figure}.yaml`" + (f", shortened to {spec.short.describe()}" if short else ""),
        f"- store: `{store_path}`, {how}; {n_runs} runs, {ds.sizes['time']} records, "
        f"{int(ds.attrs.get('steps_total', 0))} steps per run",
        f"- analysis and plots: {analysis:.1f} s",
        f"- plots: `{html.name}`; all numbers: `{numbers.name}`",
        f"- command: `palmc reproduce {figure}{' --short' if short else ''}`", "",
        "## Key numbers", "", *section.lines, "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    log(f"wrote {report}, {html} and {numbers}")
    return report
