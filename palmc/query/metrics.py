"""The metric registry and the metric definitions.

Every metric is a function ``f(ds, **args) -> xr.DataArray`` registered with :func:`metric`. It is written with
xarray operations only, so it stays dask-backed on a store opened lazily, and it never drops or assumes the
``time``, ``seed`` or ``model`` dimensions: it maps a record to a value record by record.

Conventions (docs/dataset-contract.md): network layers 0 (input) .. L (output); a weight variable at layer l is a
matrix ``[neuron, pre]`` = ``[post, pre]``:

* W^PP_l = ``WPP[layer=l]``: pyramidal layer l-1 -> l (l = 1..L), and ``dWPP`` its update;
* B^PP_l = ``BPP[layer=l]``: pyramidal layer l+1 -> apical dendrites of layer l (l = 1..L-1);
* B^PI_l = ``BPI[layer=l]``: interneurons of layer l+1 -> apical dendrites of layer l (l = 1..L-1);
* W^IP_l = ``WIP[layer=l]``: pyramidal layer l-1 -> interneurons of layer l (l = 2..L).

Entries beyond a layer's width (``layer_size``) are padding (NaN in the store); they are set to 0 before any
matrix operation, so real NaNs (e.g. a diverged run) still propagate.

Angles between matrices A and B are ``deg(arccos(cos))`` with the Frobenius cosine
``cos = tr(A^T B) / (|A|_F |B|_F) = sum(A*B) / (|A|_F |B|_F)``. They are evaluated with the equivalent, stable
form ``2 atan2(|Â - B̂|_F, |Â + B̂|_F)`` (Â = A/|A|_F), so near 0 deg the result keeps full precision: where the
reference's cosine rounds to 1.0000000000000002 and its arccos gives NaN, this gives ~0 deg, and B^PP = (W^PP)^T
(BP) gives 0. A zero matrix gives NaN (0/0), e.g. phi' of a relu layer that is entirely inactive.

The effective dendritic factor used by the comparison metrics is ``c = gbas / (gl + gbas + gapi)`` for every
layer, as in the reference analysis; the ANN of :func:`angle_dWPP_BP` uses ``gbas / (gl + gbas)`` at the output.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import xarray as xr

from palmc.engine import equations as eq
from palmc.query.model import QueryError, available_text

__all__ = [
    "ACTIVATIONS",
    "DERIVATIVES",
    "METRICS",
    "Metric",
    "angle_deg",
    "describe_metrics",
    "dphi",
    "get_metric",
    "hidden_layers",
    "list_metrics",
    "masked_vector",
    "masked_weight",
    "metric",
    "output_layer",
    "phi",
]

MetricFunc = Callable[..., xr.DataArray]


# ----------------------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A registered metric: its function, the variables/coordinates it needs, and presentation metadata."""

    name: str
    func: MetricFunc
    requires: tuple[str, ...]
    units: str
    long_name: str

    @property
    def doc(self) -> str:
        """The full docstring (formula and symbols)."""
        return inspect.getdoc(self.func) or ""

    @property
    def summary(self) -> str:
        """First line of the docstring."""
        return self.doc.splitlines()[0] if self.doc else ""

    @property
    def arg_names(self) -> list[str]:
        """Keyword arguments accepted besides the dataset."""
        return list(self.arguments)

    @property
    def arguments(self) -> dict[str, Any]:
        """Keyword arguments accepted besides the dataset, with their defaults (``inspect.Parameter.empty``: none)."""
        params = list(inspect.signature(self.func).parameters.values())[1:]
        return {p.name: p.default for p in params}

    def describe(self) -> str:
        """Name, units, what it needs, its arguments and its full description (``palmc metrics``)."""
        args = ", ".join(name if default is inspect.Parameter.empty else f"{name}={default!r}"
                         for name, default in self.arguments.items())
        lines = [self.name, f"  units      {self.units or '(none)'}"]
        if self.long_name != self.summary.rstrip("."):
            lines.append(f"  long_name  {self.long_name}")
        lines += [f"  needs      {', '.join(self.requires) or '(nothing)'}", f"  arguments  {args or '(none)'}"]
        lines += [f"  {line}".rstrip() for line in self.doc.splitlines()]
        return "\n".join(lines)

    def check(self, ds: xr.Dataset, args: dict[str, Any]) -> None:
        """Raise :class:`QueryError` if ``ds`` lacks a required variable/coordinate or an argument is unknown."""
        missing = [r for r in self.requires if r not in ds.variables]
        if missing:
            raise QueryError(
                f"metric {self.name!r} needs {', '.join(missing)}, which the dataset does not have; "
                f"variables: {available_text(ds.data_vars)}; coordinates: {available_text(ds.coords)}"
            )
        unknown = [a for a in args if a not in self.arg_names]
        if unknown:
            raise QueryError(
                f"metric {self.name!r} has no argument {', '.join(map(repr, unknown))}; "
                f"its arguments: {available_text(self.arg_names)}"
            )

    def __call__(self, ds: xr.Dataset, **args: Any) -> xr.DataArray:
        self.check(ds, args)
        out = self.func(ds, **args)
        out = out.rename(self.name)
        out.attrs.update({"long_name": self.long_name, "units": self.units, "metric": self.name})
        return out


METRICS: dict[str, Metric] = {}


def metric(
    name: str, *, requires: tuple[str, ...] = (), units: str = "", long_name: str | None = None
) -> Callable[[MetricFunc], MetricFunc]:
    """Register ``f(ds, **args) -> DataArray`` as metric ``name``.

    ``requires`` lists the dataset variables and coordinates the metric reads (checked before evaluation);
    the docstring documents the formula with the paper's symbols.
    """

    def register(func: MetricFunc) -> MetricFunc:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        summary = (inspect.getdoc(func) or name).splitlines()[0].rstrip(".")
        METRICS[name] = Metric(name, func, tuple(requires), units, long_name or summary)
        return func

    return register


def list_metrics() -> list[str]:
    """Names of all registered metrics, sorted."""
    return sorted(METRICS)


def get_metric(name: str) -> Metric:
    """The registered metric ``name``; :class:`QueryError` listing the metrics if there is none."""
    try:
        return METRICS[name]
    except KeyError:
        raise QueryError(f"unknown metric {name!r}; metrics: {available_text(list_metrics())}") from None


def describe_metrics(details: bool = False) -> str:
    """One line per metric: name, units and summary; with ``details``, every metric's :meth:`Metric.describe`."""
    if details:
        return "\n\n".join(METRICS[n].describe() for n in list_metrics())
    width = max(len(n) for n in METRICS)
    return "\n".join(
        f"{n:<{width}}  [{METRICS[n].units or '-'}]  {METRICS[n].summary}" for n in list_metrics()
    )


# ----------------------------------------------------------------------------------------------------------------
# activations phi and their derivatives phi'
# ----------------------------------------------------------------------------------------------------------------


def _logistic(x: xr.DataArray) -> xr.DataArray:
    return 1.0 / (1.0 + np.exp(-x))


def _d_logistic(x: xr.DataArray) -> xr.DataArray:
    s = _logistic(x)
    return s * (1.0 - s)


def _hard_sigmoid(x: xr.DataArray) -> xr.DataArray:
    return np.maximum(0.0, np.minimum(1.0, x / 6.0 + 0.5))


def _d_hard_sigmoid(x: xr.DataArray) -> xr.DataArray:
    # 1 strictly inside the linear part (-3, 3), 0 at the kinks and outside
    y = x / 6.0 + 0.5
    return np.heaviside(y, 0.0) * np.heaviside(1.0 - y, 0.0)


def _one(x: xr.DataArray) -> xr.DataArray:
    return xr.ones_like(x).where(x.notnull())


ACTIVATIONS: dict[str, Callable[[xr.DataArray], xr.DataArray]] = {
    "logistic": _logistic,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "hard_sigmoid": _hard_sigmoid,
    "soft_relu": lambda x: np.logaddexp(0.0, x),
    "linear": lambda x: x,
}
"""phi for each activation name, as xarray/dask-friendly functions."""

DERIVATIVES: dict[str, Callable[[xr.DataArray], xr.DataArray]] = {
    "logistic": _d_logistic,  # s(1-s)
    "tanh": lambda x: 1.0 - np.tanh(x) ** 2,
    "relu": lambda x: np.heaviside(x, 0.0),  # H(x), H(0) = 0
    "hard_sigmoid": _d_hard_sigmoid,
    "soft_relu": _logistic,
    "linear": _one,
}
"""phi' for each activation name."""


def _by_activation(
    x: xr.DataArray, activation: xr.DataArray, table: dict[str, Callable[[xr.DataArray], xr.DataArray]]
) -> xr.DataArray:
    """Apply ``table[activation]`` elementwise, where ``activation`` (str, dims ⊆ x.dims) picks the function."""
    names = sorted({str(a) for a in np.asarray(activation.values).ravel() if str(a)})
    out: xr.DataArray | None = None
    for name in names:
        if name not in table:
            raise QueryError(f"unknown activation {name!r}; known activations: {available_text(table)}")
        value = table[name](x)
        out = value.where(activation == name) if out is None else value.where(activation == name, out)
    if out is None:  # no activation at all (e.g. only the input layer)
        return x * np.nan
    return out


def phi(x: xr.DataArray, activation: xr.DataArray) -> xr.DataArray:
    """phi(x) with the activation named by ``activation`` (e.g. the coordinate ``activation(layer, model)``)."""
    return _by_activation(x, activation, ACTIVATIONS)


def dphi(x: xr.DataArray, activation: xr.DataArray) -> xr.DataArray:
    """phi'(x): logistic s(1-s); tanh 1-tanh^2; relu H(x) (H(0)=0); hard_sigmoid 1 on (-3, 3) else 0;
    soft_relu logistic(x); linear 1."""
    return _by_activation(x, activation, DERIVATIVES)


# ----------------------------------------------------------------------------------------------------------------
# helpers on the contract's layout
# ----------------------------------------------------------------------------------------------------------------

_PRE_LAYER_OFFSET = {"WPP": -1, "dWPP": -1, "WIP": -1, "dWIP": -1, "BPP": 1, "dBPP": 1, "BPI": 1, "dBPI": 1}
_LAYER_COORDS = ("activation", "layer_size")


def output_layer(ds: xr.Dataset) -> int:
    """L, the index of the output layer."""
    return int(np.max(ds["layer"].values))


def hidden_layers(ds: xr.Dataset) -> list[int]:
    """The hidden layers 1..L-1."""
    top = output_layer(ds)
    return [int(l) for l in ds["layer"].values if 1 <= int(l) < top]


def _above(layers: list[int]) -> list[int]:
    return [l + 1 for l in layers]


def forward_layers(ds: xr.Dataset) -> list[int]:
    """The layers that receive forward weights W^PP, 1..L."""
    return [int(l) for l in ds["layer"].values if int(l) >= 1]


def _clean(da: xr.DataArray) -> xr.DataArray:
    """Drop the per-layer coordinates, which conflict once layers are shifted against each other."""
    return da.drop_vars([c for c in _LAYER_COORDS if c in da.coords])


def _sizes_at(ds: xr.Dataset, offset: int) -> xr.DataArray | None:
    """``layer_size`` of layer ``l + offset``, indexed by ``l`` (NaN where that layer does not exist)."""
    if "layer_size" not in ds.coords:
        return None
    size = ds["layer_size"].astype(float)
    layers = ds["layer"].values
    shifted = _clean(size).reindex(layer=layers + offset)
    return shifted.assign_coords(layer=layers)


Layers = int | list[int] | None


def _pick(da: xr.DataArray, layers: Layers) -> xr.DataArray:
    """``da`` at ``layers`` (a list keeps the dim, an int drops it, None keeps all)."""
    if layers is None or "layer" not in da.dims:
        return da
    return da.sel(layer=layers, drop=isinstance(layers, int))


def masked_weight(ds: xr.Dataset, name: str, layers: Layers = None) -> xr.DataArray:
    """Weight variable ``name`` at ``layers``, padding entries set to 0 (rows beyond the layer's width, columns
    beyond the presynaptic layer's width), per-layer coordinates dropped.

    The layers are selected before masking: this keeps the dask graph a simple chunk-by-chunk pipeline.
    """
    w = _pick(ds[name], layers)
    post, pre = _sizes_at(ds, 0), _sizes_at(ds, _PRE_LAYER_OFFSET.get(name, -1))
    if post is None or pre is None:
        return _clean(w.where(w.notnull(), 0.0))
    valid = _pick((ds["neuron"] < post) & (ds["pre"] < pre), layers)
    return _clean(w.where(valid, 0.0))


def masked_vector(ds: xr.Dataset, name: str, layers: Layers = None) -> xr.DataArray:
    """Vector variable ``name`` (dim ``neuron``) at ``layers``, padding set to 0. Layer-less variables
    (``input``: layer 0; ``target``, ``error``: layer L) take ``layers`` as the layer whose width applies."""
    v = ds[name]
    size = _sizes_at(ds, 0)
    if size is None:
        return _clean(_pick(v, layers).where(_pick(v, layers).notnull(), 0.0))
    return _clean(_pick(v, layers).where(ds["neuron"] < _pick(size, layers), 0.0))


def _coord(ds: xr.Dataset, name: str) -> xr.DataArray:
    if name not in ds.coords:
        raise QueryError(f"the dataset has no coordinate {name!r}; coordinates: {available_text(ds.coords)}")
    return ds[name]


def c_hidden(ds: xr.Dataset) -> xr.DataArray:
    """c = gbas / (gl + gbas + gapi) (dims: model), the basal attenuation of a pyramidal cell with apical input."""
    gl, gbas, gapi = (_clean(_coord(ds, g)) for g in ("gl", "gbas", "gapi"))
    return eq.basal_attenuation(gl, gbas, gapi)


def c_output(ds: xr.Dataset) -> xr.DataArray:
    """c_out = gbas / (gl + gbas) (dims: model), the output layer, which has no apical compartment."""
    gl, gbas = (_clean(_coord(ds, g)) for g in ("gl", "gbas"))
    return eq.output_basal_attenuation(gl, gbas)


def _transpose(w: xr.DataArray) -> xr.DataArray:
    """Matrix transpose: swap the roles of ``neuron`` and ``pre``."""
    return w.rename({"neuron": "_tmp"}).rename({"pre": "neuron"}).rename({"_tmp": "pre"})


def _relabel(da: xr.DataArray, layers: list[int]) -> xr.DataArray:
    """Give the layer dim the labels ``layers`` (e.g. W^PP_{l+1} labelled l)."""
    return da.assign_coords(layer=layers)


def angle_deg(a: xr.DataArray, b: xr.DataArray, dims: tuple[str, ...] = ("neuron", "pre")) -> xr.DataArray:
    """Angle in degrees between a and b (Frobenius inner product over ``dims``).

    Mathematically deg(arccos(<a,b> / (|a| |b|))); evaluated as 2 atan2(|â - b̂|, |â + b̂|) with â = a/|a|,
    b̂ = b/|b|, which keeps full precision near 0 and 180 deg (arccos of a rounded cosine loses half the digits
    there and gives NaN for a cosine rounded above 1). A zero matrix gives NaN (0/0).
    """
    common = [d for d in a.dims if d in b.dims]
    b = b.transpose(*common, ...)
    norm_a = np.sqrt((a * a).sum(dims, skipna=False))
    norm_b = np.sqrt((b * b).sum(dims, skipna=False))
    unit_a = a / norm_a.where(norm_a > 0)  # a zero matrix -> NaN, without a 0/0 warning
    unit_b = b / norm_b.where(norm_b > 0)
    diff = np.sqrt(((unit_a - unit_b) ** 2).sum(dims, skipna=False))
    total = np.sqrt(((unit_a + unit_b) ** 2).sum(dims, skipna=False))
    return np.degrees(2.0 * np.arctan2(diff, total))


def _activation(ds: xr.Dataset) -> xr.DataArray:
    return _coord(ds, "activation")


def _derivatives_at_cvbas(ds: xr.Dataset, layers: list[int]) -> xr.DataArray:
    """phi'_l(c * vbas_l) at ``layers`` (dims time, layer, neuron, seed, model), c = gbas/(gl+gbas+gapi), padding 0."""
    v = masked_vector(ds, "vbas", layers)
    d = dphi(v * c_hidden(ds), _clean(_activation(ds).sel(layer=layers)))
    size = _sizes_at(ds, 0)
    return d if size is None else d.where(ds["neuron"] < size.sel(layer=layers), 0.0)


# ----------------------------------------------------------------------------------------------------------------
# metrics: feedback alignment
# ----------------------------------------------------------------------------------------------------------------


@metric("angle_BPP_WPPT", requires=("BPP", "WPP"), units="deg")
def angle_BPP_WPPT(ds: xr.Dataset) -> xr.DataArray:
    """Angle between B^PP_l and (W^PP_{l+1})^T, per hidden layer l = 1..L-1.

    angle = deg(arccos(tr(A^T B) / (|A|_F |B|_F))) with A = B^PP_l (layer l+1 -> l) and B = (W^PP_{l+1})^T.
    0 deg means the feedback weights equal the transposed forward weights (backprop).
    """
    hidden = hidden_layers(ds)
    b = masked_weight(ds, "BPP", hidden)
    wt = _transpose(_relabel(masked_weight(ds, "WPP", _above(hidden)), hidden))
    return angle_deg(b, wt)


@metric("angle_jacobians", requires=("BPP", "WPP", "vbas", "activation", "gl", "gbas", "gapi"), units="deg")
def angle_jacobians(ds: xr.Dataset) -> xr.DataArray:
    """Angle between J_g = B^PP_l diag(phi'_{l+1}) and J_f^T = diag(phi'_l) (W^PP_{l+1})^T, per hidden layer l.

    phi'_k = phi_k'(c * vbas_k) with c = gbas / (gl + gbas + gapi) for every layer k, including the output layer
    (as in the reference analysis); phi_k is the activation of layer k (coordinate ``activation``).
    """
    hidden = hidden_layers(ds)
    d_l = _derivatives_at_cvbas(ds, hidden)
    d_next = _relabel(_derivatives_at_cvbas(ds, _above(hidden)), hidden).rename(neuron="pre")
    j_g = masked_weight(ds, "BPP", hidden) * d_next
    j_ft = d_l * _transpose(_relabel(masked_weight(ds, "WPP", _above(hidden)), hidden))
    return angle_deg(j_g, j_ft)


@metric("angle_BPP_RHS", requires=("BPP", "WPP", "vbas", "activation", "gl", "gbas", "gapi"), units="deg")
def angle_BPP_RHS(ds: xr.Dataset) -> xr.DataArray:
    """Angle between B^PP_l and diag(phi'_l) (W^PP_{l+1})^T diag(phi'_{l+1}), per hidden layer l.

    The right-hand side is the fixed point PAL's feedback learning aims for. phi'_k = phi_k'(c * vbas_k) with
    c = gbas / (gl + gbas + gapi) for every layer, as in :func:`angle_jacobians`.
    """
    hidden = hidden_layers(ds)
    d_l = _derivatives_at_cvbas(ds, hidden)
    d_next = _relabel(_derivatives_at_cvbas(ds, _above(hidden)), hidden).rename(neuron="pre")
    rhs = d_l * _transpose(_relabel(masked_weight(ds, "WPP", _above(hidden)), hidden)) * d_next
    return angle_deg(masked_weight(ds, "BPP", hidden), rhs)


@metric("angle_BPI_negBPP", requires=("BPI", "BPP"), units="deg")
def angle_BPI_negBPP(ds: xr.Dataset) -> xr.DataArray:
    """Angle between B^PI_l and -B^PP_l, per hidden layer l.

    0 deg: the interneurons cancel the top-down pyramidal input at the apical dendrites (self-predicting state).
    """
    hidden = hidden_layers(ds)
    return angle_deg(masked_weight(ds, "BPI", hidden), -masked_weight(ds, "BPP", hidden))


@metric("angle_WIP_WPP", requires=("WIP", "WPP"), units="deg")
def angle_WIP_WPP(ds: xr.Dataset) -> xr.DataArray:
    """Angle between W^IP_l and W^PP_l, per layer l = 2..L (the layers with interneurons).

    0 deg: the interneurons predict the pyramidal cells of their layer (self-predicting state, where W^IP_l is
    proportional to W^PP_l).
    """
    layers = [l for l in forward_layers(ds) if l >= 2]
    return angle_deg(masked_weight(ds, "WIP", layers), masked_weight(ds, "WPP", layers))


# ----------------------------------------------------------------------------------------------------------------
# metrics: forward learning
# ----------------------------------------------------------------------------------------------------------------


@metric(
    "angle_dWPP_BP",
    requires=("WPP", "dWPP", "input", "target", "activation", "layer_size", "gl", "gbas", "gapi"),
    units="deg",
)
def angle_dWPP_BP(ds: xr.Dataset, forward: str = "ann") -> xr.DataArray:
    """Angle between the recorded update dW^PP_l and the backprop update of the equivalent ANN, per layer 1..L.

    All quantities come from the same record k (weights after that step's update). The ANN has the microcircuit's
    forward weights W^PP_l and activations phi_l, and the basal attenuation c_l = gbas/(gl+gbas+gapi) for hidden
    layers, c_L = gbas/(gl+gbas) at the output:

    * forward (``forward="ann"``, default): r_0 = ``input``, v_l = c_l W^PP_l r_{l-1}, r_l = phi_l(v_l);
      (``forward="recorded"``): v_l = c_l ``vbas``_l and r_l = ``rP_breve``_l as recorded, r_0 = ``input``;
    * output error at the voltage level: e_L = ``target`` - v_L;
    * backprop: e_l = phi_l'(v_l) * ((W^PP_{l+1})^T e_{l+1}) for l = L-1..1;
    * update: dW^BP_l = e_l r_{l-1}^T, compared with the recorded ``dWPP``_l by the Frobenius angle.

    Only defined where a target exists (fw_bw, training records); NaN elsewhere. Learning rates and dt scale each
    layer's update by a positive factor, which leaves the angle unchanged.
    """
    if forward not in ("ann", "recorded"):
        raise QueryError(f"angle_dWPP_BP: forward must be 'ann' or 'recorded', got {forward!r}")
    if forward == "recorded":
        missing = [v for v in ("vbas", "rP_breve") if v not in ds.variables]
        if missing:
            raise QueryError(
                f"angle_dWPP_BP(forward='recorded') needs {', '.join(missing)}; "
                f"variables: {available_text(ds.data_vars)}"
            )
    top = output_layer(ds)
    layers = forward_layers(ds)
    act = _clean(_activation(ds))
    sizes = _sizes_at(ds, 0)
    assert sizes is not None

    def at(da: xr.DataArray, l: int) -> xr.DataArray:
        return da.sel(layer=l, drop=True)

    def valid(l: int) -> xr.DataArray:
        return ds["neuron"] < at(sizes, l)

    weights = {l: masked_weight(ds, "WPP", l) for l in layers}
    c = {l: (c_output(ds) if l == top else c_hidden(ds)) for l in layers}
    rates: dict[int, xr.DataArray] = {0: masked_vector(ds, "input", 0)}
    volts: dict[int, xr.DataArray] = {}
    for l in layers:
        if forward == "ann":
            v = (weights[l] * rates[l - 1].rename(neuron="pre")).sum("pre", skipna=False) * c[l]
            volts[l] = v.where(valid(l), 0.0)
            rates[l] = phi(volts[l], at(act, l)).where(valid(l), 0.0)
        else:
            volts[l] = masked_vector(ds, "vbas", l) * c[l]
            rates[l] = masked_vector(ds, "rP_breve", l)

    err = masked_vector(ds, "target", top) - volts[top]
    updates: dict[int, xr.DataArray] = {}
    for l in reversed(layers):
        if l < top:
            back = (weights[l + 1] * err).sum("neuron", skipna=False).rename(pre="neuron")
            err = (dphi(volts[l], at(act, l)) * back).where(valid(l), 0.0)
        updates[l] = err * rates[l - 1].rename(neuron="pre")

    angles = [angle_deg(masked_weight(ds, "dWPP", l), updates[l]) for l in layers]
    return xr.concat(angles, dim=xr.DataArray(layers, dims="layer", name="layer"), coords="minimal")


@metric("MSE", requires=("MSE",), long_name="sum of squared output errors", units="")
def mse(ds: xr.Dataset) -> xr.DataArray:
    """The recorded squared output error MSE = sum_i (ŭ^P_{L,i} - target_i)^2 (a sum over the output units).

    Kept as recorded (the reference's "MSE" is a sum, not a mean; see ``mse_mean``). NaN during settling; fw_bw and supervised only.
    """
    return ds["MSE"]


@metric("mse_mean", requires=("MSE", "layer_size"), long_name="mean squared output error")
def mse_mean(ds: xr.Dataset) -> xr.DataArray:
    """Mean squared output error: ``MSE`` / n_L, with n_L the width of the output layer."""
    n_out = ds["layer_size"].sel(layer=output_layer(ds), drop=True)
    return ds["MSE"] / n_out


@metric("error", requires=("error",), long_name="output error")
def error(ds: xr.Dataset) -> xr.DataArray:
    """The recorded output error e = ŭ^P_L - target, per output unit (dim ``neuron``).

    NaN during settling; fw_bw and supervised only.
    """
    return ds["error"]


@metric("test_accuracy", requires=("test_accuracy",), long_name="test accuracy", units="1")
def test_accuracy(ds: xr.Dataset) -> xr.DataArray:
    """Fraction of the test samples a frozen copy of the network classifies right (task supervised).

    The class of a sample is the argmax of the output rates r̆^P_L at the end of its presentation (Tpres), with
    plasticity, target nudging and noise off. Dim ``eval_epoch`` (0 = after settling) instead of ``time``.
    """
    return ds["test_accuracy"]


@metric("train_accuracy", requires=("train_accuracy",), long_name="training accuracy", units="1")
def train_accuracy(ds: xr.Dataset) -> xr.DataArray:
    """Fraction of the evaluated training samples (the first ``evaluation.train_samples``) classified right, as
    ``test_accuracy`` (task supervised; dim ``eval_epoch``)."""
    return ds["train_accuracy"]
