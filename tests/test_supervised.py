"""Task supervised: the Yin-Yang generator, user datasets (good and bad), evaluation, both engines, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

import palmc
from palmc.cli import app
from palmc.engine.compiled import driver
from palmc.engine.datasets import (YINYANG_SPLITS, DatasetError, LabelledData, check_arrays, target_voltages,
                                   yinyang)
from palmc.engine.params import Protocol, RunSpec, TargetMap
from palmc.engine.tasks import Simulation, evaluate
from palmc.plan import make_plan
from palmc.runner import run_batch
from palmc.schema import ExperimentError, load_experiment, parse_experiment
from palmc.store.writer import create_store
from tests.test_kernel import assert_same, make_params

runner = CliRunner()


# -- Yin-Yang -------------------------------------------------------------------------------------------------

# The first samples (x, y) and labels of the splits published with the dataset (lkriener/yin_yang_data_set,
# publication_data/{train,test}_{samples,labels}.npy)
PUBLISHED_FIRST = {
    "train": ([[0.6803075385877797, 0.450499251969543], [0.09767211400638387, 0.6842330265121569],
               [0.7553614103176525, 0.4251558744912447]], [2, 1, 2]),
    "test": ([[0.23409664559563403, 0.4017249751828972], [0.7513290219574494, 0.4682425192680968],
              [0.13832530718825586, 0.570953971325061]], [2, 2, 1]),
}


def _class_by_polar_geometry(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The Yin-Yang classes worked out another way: the S-curve is two half circles of radius 1/4 around
    (1/4, 1/2) and (3/4, 1/2); class 1 is the region above the curve (upper half outside the right circle, plus
    the left circle), with the dots of radius 1/10 at both centres as class 2."""
    left, right = (x - 0.25) + 1j * (y - 0.5), (x - 0.75) + 1j * (y - 0.5)
    dot = (np.abs(left) < 0.1) | (np.abs(right) < 0.1)
    above_curve = np.where(y > 0.5, np.abs(right) > 0.25, np.abs(left) <= 0.25)
    return np.where(dot, 2, above_curve.astype(int))


@pytest.mark.parametrize("split", ["train", "test"])
def test_yinyang_reproduces_the_published_splits(split: str) -> None:
    size, seed = YINYANG_SPLITS[split]
    inputs, labels = yinyang(size, seed)
    points, first_labels = PUBLISHED_FIRST[split]
    np.testing.assert_allclose(inputs[:3, :2], points, rtol=0, atol=1e-15)
    assert labels[:3].tolist() == first_labels
    np.testing.assert_array_equal(inputs[:, 2:], 1 - inputs[:, :2])  # the mirrored encoding
    x, y = inputs[:, 0], inputs[:, 1]
    assert (np.hypot(x - 0.5, y - 0.5) <= 0.5).all()
    np.testing.assert_array_equal(labels, _class_by_polar_geometry(x, y))
    # the classes are balanced: the wanted class is uniform over 0..2 (binomial std ~0.7 % of the size)
    shares = np.bincount(labels, minlength=3) / size
    assert np.abs(shares - 1 / 3).max() < 0.03


def test_yinyang_class_of_points_on_the_symbol() -> None:
    points = {(0.75, 0.5): 2, (0.25, 0.5): 2, (0.5, 0.95): 1, (0.5, 0.05): 0, (0.25, 0.3): 1, (0.75, 0.7): 0,
              (0.1, 0.45): 1, (0.95, 0.52): 0}
    inputs, labels = yinyang(3000, 7)
    for (x, y), expected in points.items():
        assert _class_by_polar_geometry(np.array(x), np.array(y)) == expected
    # the generated labels agree with the geometry on all samples of another seed as well
    np.testing.assert_array_equal(labels, _class_by_polar_geometry(inputs[:, 0], inputs[:, 1]))


# -- user datasets -----------------------------------------------------------------------------------------------


def separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes, a > b and a < b, with a margin, encoded like Yin-Yang: (a, b, 1 - a, 1 - b)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 1, size=(4 * n, 2))
    points = points[np.abs(points[:, 0] - points[:, 1]) > 0.2][:n]
    return np.concatenate([points, 1 - points], axis=1), (points[:, 0] > points[:, 1]).astype(np.int64)


def write_npz(path: Path, **changes: object) -> Path:
    x_train, y_train = separable(200, 1)
    x_test, y_test = separable(100, 2)
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


SUPERVISED_YAML = """\
name: separable
task: supervised
network: {{layers: [4, 8, 2]}}
dynamics: {{dt: 0.1, Tpres: 1.0, settling_time: 1.0}}
plasticity: {{eta_fw: [30.0, 0.3], eta_bw: [0.0], eta_IP: [10.0], eta_PI: [0.0]{plasticity}}}
input:
  epochs: {epochs}
  dataset: {dataset}
evaluation: {{every: {every}, train_samples: 50}}
models: [{{kind: BP}}]
seeds: [1, 2]
recording: {{variables: [WPP, MSE], every: 500}}
"""


def write_supervised(tmp_path: Path, dataset: str, epochs: int = 20, every: int = 5, plasticity: str = "") -> Path:
    path = tmp_path / "separable.yaml"
    path.write_text(SUPERVISED_YAML.format(dataset=dataset, epochs=epochs, every=every, plasticity=plasticity))
    return path


def test_user_npz_trains_and_evaluates_end_to_end(tmp_path: Path) -> None:
    data = write_npz(tmp_path / "data.npz")
    exp = write_supervised(tmp_path, str(data))
    store = palmc.simulate(exp, tmp_path / "out.zarr", workers=1, progress=False)
    ds = palmc.open(store)
    assert ds["test_accuracy"].dims == ("eval_epoch", "seed", "model")
    assert ds["eval_epoch"].values.tolist() == [0, 5, 10, 15, 20]
    assert ds["test_accuracy"].attrs["units"] == "1"
    final = ds["test_accuracy"].isel(eval_epoch=-1).values
    assert (final >= 0.95).all(), final
    assert (ds["train_accuracy"].isel(eval_epoch=-1).values >= 0.95).all()
    first = ds["test_accuracy"].isel(eval_epoch=0).values
    assert (first < final).all()


def test_resuming_with_other_data_in_the_file_is_refused(tmp_path: Path) -> None:
    data = write_npz(tmp_path / "data.npz")
    exp = write_supervised(tmp_path, str(data), epochs=1, every=1)
    store = tmp_path / "out.zarr"
    assert runner.invoke(app, ["simulate", str(exp), "-o", str(store), "--workers", "1", "--no-progress"]).exit_code == 0
    x_test, y_test = separable(100, 3)
    write_npz(tmp_path / "data.npz", x_test=x_test, y_test=y_test)
    result = runner.invoke(app, ["simulate", str(exp), "-o", str(store), "--resume", "--no-progress"])
    assert result.exit_code == 2 and "different experiment" in result.output


@pytest.mark.parametrize("changes, expected", [
    (dict(x_train=np.zeros((10, 3))), "x_train: expected shape (samples, 4)"),
    (dict(y_test=np.full(100, 2)), "y_test: expected labels in 0..1"),
    (dict(y_test=None), "missing array y_test"),
    (dict(x_train=np.full((200, 4), np.nan)), "x_train: expected finite numbers"),
    (dict(y_train=np.zeros(150, dtype=int)), "y_train: expected one label per sample of x_train (200)"),
    (dict(y_train=np.full(200, 0.5)), "y_train: expected whole-number class labels"),
])
def test_bad_datasets_exit_2_and_write_nothing(tmp_path: Path, changes: dict, expected: str) -> None:
    data = write_npz(tmp_path / "bad.npz", **changes)
    exp = write_supervised(tmp_path, str(data))
    result = runner.invoke(app, ["simulate", str(exp), "-o", str(tmp_path / "out.zarr"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert expected in result.output.replace("\n", " ") and "input.dataset.path" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.zarr").exists()


def test_dataset_file_problems_name_the_file(tmp_path: Path) -> None:
    for dataset, expected in [(str(tmp_path / "none.npz"), "no such file"),
                              (str(write_npz(tmp_path / "d.npz")), None)]:
        exp = write_supervised(tmp_path, dataset)
        if expected is None:
            load_experiment(exp)
            continue
        with pytest.raises(ExperimentError, match=expected):
            load_experiment(exp)
    (tmp_path / "garbage.nc").write_text("not a dataset")
    with pytest.raises(ExperimentError, match="expected a .npz file or a NetCDF/Zarr dataset"):
        load_experiment(write_supervised(tmp_path, str(tmp_path / "garbage.nc")))


def test_netcdf_dataset_with_named_variables(tmp_path: Path) -> None:
    x_train, y_train = separable(50, 1)
    x_test, y_test = separable(20, 2)
    xr.Dataset({"inputs": (("sample", "feature"), x_train), "classes": ("sample", y_train),
                "test_inputs": (("test", "feature"), x_test), "test_classes": ("test", y_test)}).to_netcdf(
        tmp_path / "data.nc")
    dataset = (f"{{source: file, path: {tmp_path / 'data.nc'}, x_train: inputs, y_train: classes, "
               "x_test: test_inputs, y_test: test_classes}")
    data = load_experiment(write_supervised(tmp_path, dataset)).labelled_data()
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.y_test, y_test)


def test_one_hot_labels_and_target_mapping() -> None:
    x, labels = separable(10, 3)
    one_hot = np.eye(2)[labels]
    data = check_arrays(dict(x_train=x, y_train=one_hot, x_test=x, y_test=labels), 4, 2, "mem")
    np.testing.assert_array_equal(data.y_train, labels)
    volts = target_voltages(np.array([1, 0]), 2, on=0.9, off=0.1, kind="rate", activation="logistic")
    np.testing.assert_allclose(1 / (1 + np.exp(-volts)), [[0.1, 0.9], [0.9, 0.1]])
    with pytest.raises(DatasetError, match="must lie in"):
        target_voltages(labels, 2, on=1.0, off=0.0, kind="rate", activation="logistic")


def test_dataset_only_in_task_supervised() -> None:
    text = SUPERVISED_YAML.format(dataset="yinyang", epochs=1, every=1, plasticity="").replace("[4, 8, 2]", "[4, 8, 3]")
    assert parse_experiment(text).labelled_data().n_train == 5000
    with pytest.raises(ExperimentError, match="input.dataset: used only by task supervised") as error:
        parse_experiment(text.replace("task: supervised", "task: fw_bw"))
    assert "evaluation: used only by task supervised" in str(error.value)
    with pytest.raises(ExperimentError, match="required for task supervised"):
        parse_experiment(text.replace("  dataset: yinyang\n", ""))
    with pytest.raises(ExperimentError, match="expected shape \\(samples, 3\\) for the network.s 3 inputs, got \\(5000, 4\\)"):
        parse_experiment(text.replace("[4, 8, 3]", "[3, 8, 3]"))


# -- engines and evaluation --------------------------------------------------------------------------------------


def small_supervised(layers: tuple[int, ...], models: tuple[str, ...] = ("BP", "FA", "PAL"), epochs: int = 2,
                     per_model: dict[str, dict[str, object]] | None = None, **changes: object) -> Simulation:
    x_train, y_train = yinyang(6, 3)
    x_test, y_test = yinyang(5, 4)
    data = LabelledData(x_train, y_train, x_test, y_test, 3, "yinyang")
    proto = Protocol(task="supervised", dataset_size=6, epochs=epochs, steps_per_presentation=10, settling_steps=15,
                     data=data, target=TargetMap(1.0, -0.5, "voltage"), eval_every=1, eval_train_samples=4)
    own = per_model or {}
    runs = [RunSpec(seed=seed, model_name=m, params=make_params(m, layers, **{**changes, **own.get(m, {})}),
                    input_seed=1, teacher_seed_source=1)
            for seed in (1, 2) for m in models]
    return Simulation(runs, proto)


def _numpy_advance(sim: Simulation, n: int, hook) -> None:  # noqa: ANN001
    sim.advance(n, on_step=hook)


@pytest.mark.parametrize("layout, layers", [("neurons", (4, 5, 3)), ("lanes", (4, 3, 3))])
def test_compiled_kernel_matches_numpy_on_a_supervised_run(layout: str, layers: tuple[int, ...]) -> None:
    ref, fast = small_supervised(layers), small_supervised(layers)
    assert driver.supports(fast)
    for _ in range(2):  # an epoch at a time, with an evaluation after each (it must not disturb training)
        ref_acc = evaluate(ref, _numpy_advance)
        fast_acc = evaluate(fast, lambda s, n, h: driver.advance(s, n, h, layout=layout, specialise=False))
        for name in ref_acc:
            np.testing.assert_array_equal(fast_acc[name], ref_acc[name])
        n = ref.protocol.steps_per_epoch + (ref.protocol.settling_steps if ref.state.step == 0 else 0)
        ref.advance(n)
        driver.advance(fast, n, layout=layout, specialise=False)
        assert_same(ref, fast, layout)
    assert ref.done and fast.done


# a learning-rate schedule that acts from the second epoch on, on every rate (the default: PAL's feedback too)
SCHEDULE = dict(eta_decay=0.5, eta_decay_after=1)


# runs of one batch with different schedules: none (BP), the shared one (FA), PAL's feedback alone from the start
MIXED = {"BP": dict(eta_decay=1.0), "PAL": dict(eta_decay=0.7, eta_decay_after=0, eta_decay_rates=("eta_bw",))}


def test_learning_rate_schedule_scales_the_rates_of_each_epoch() -> None:
    sim = small_supervised((4, 5, 3), epochs=3, **SCHEDULE)
    S, N = sim.protocol.settling_steps, sim.protocol.steps_per_epoch
    assert sim.params_at(S) is sim.params and sim.params_at(S + N) is sim.params  # settling and epoch 0
    for epoch, factor in ((1, 0.5), (2, 0.25)):
        scaled = sim.params_at(S + epoch * N + 1)
        assert scaled is sim.params_at(S + (epoch + 1) * N)  # one set of rates per epoch
        for name in ("dt_eta_fw", "dt_eta_bw", "dt_eta_IP", "dt_eta_PI", "dt_alpha_eta_bw"):
            for base, rates in zip(getattr(sim.params, name), getattr(scaled, name)):
                np.testing.assert_allclose(rates, base * factor, rtol=1e-15, err_msg=name)
    only_forward = small_supervised((4, 5, 3), epochs=3, eta_decay=0.5, eta_decay_rates=("eta_fw",))
    epoch_0 = only_forward.params_at(S + 1)
    np.testing.assert_array_equal(epoch_0.dt_eta_fw[0], only_forward.params.dt_eta_fw[0] * 0.5)
    np.testing.assert_array_equal(epoch_0.dt_eta_IP[0], only_forward.params.dt_eta_IP[0])
    without = small_supervised((4, 5, 3), epochs=3)
    assert all(without.params_at(k) is without.params for k in (1, S + 1, S + 2 * N + 1))  # no schedule: unchanged
    mixed = small_supervised((4, 5, 3), epochs=3, per_model=MIXED, **SCHEDULE)  # runs: (BP, FA, PAL) x 2 seeds
    epoch_1 = mixed.params_at(S + N + 1)
    expected = {"dt_eta_fw": [1, 0.5, 1], "dt_eta_IP": [1, 0.5, 1], "dt_eta_bw": [1, 0.5, 0.7**2]}
    for name, factors in expected.items():
        np.testing.assert_allclose(getattr(epoch_1, name)[0], getattr(mixed.params, name)[0] * (factors * 2),
                                   rtol=1e-15, err_msg=name)


@pytest.mark.parametrize("layout, layers", [("neurons", (4, 5, 3)), ("lanes", (4, 3, 3))])
def test_compiled_kernel_matches_numpy_under_a_learning_rate_schedule(layout: str, layers: tuple[int, ...]) -> None:
    ref = small_supervised(layers, epochs=3, per_model=MIXED, **SCHEDULE)
    fast = small_supervised(layers, epochs=3, per_model=MIXED, **SCHEDULE)
    constant = small_supervised(layers, epochs=3)
    # in pieces that start and end within epochs, so that segments cross epoch starts
    for n in (15 + 25, 47, 60, 58):
        ref.advance(n)
        constant.advance(n)
        driver.advance(fast, n, layout=layout, specialise=False)
        assert_same(ref, fast, layout)
    assert ref.done and fast.done
    np.testing.assert_raises(AssertionError, assert_same, ref, constant)  # the schedule did change the learning


def test_evaluation_leaves_the_training_run_untouched() -> None:
    sim, twin = small_supervised((4, 5, 3)), small_supervised((4, 5, 3))
    sim.advance(40)
    twin.advance(40)
    accuracy = evaluate(sim, _numpy_advance)
    assert set(accuracy) == {"test_accuracy", "train_accuracy"} and accuracy["test_accuracy"].shape == (6,)
    assert_same(twin, sim, "after evaluation")
    sim.advance(100)
    twin.advance(100)
    assert_same(twin, sim, "training after evaluation")


def test_evaluation_reads_the_argmax_of_the_output_rates() -> None:
    sim = small_supervised((4, 5, 3), ("BP",))
    seen: list[np.ndarray] = []

    def advance(frozen: Simulation, n: int, hook) -> None:  # noqa: ANN001
        def spy(s: Simulation) -> None:
            if s.state.step % s.protocol.steps_per_presentation == 0:
                seen.append(s.state.rP_breve[-1].copy())
            hook(s)
        frozen.advance(n, on_step=spy)

    accuracy = evaluate(sim, advance)
    data = sim.protocol.data
    labels = np.concatenate([data.y_test, data.y_train[:4]])
    classes = np.argmax(np.stack(seen, axis=1), axis=2)  # (runs, samples)
    np.testing.assert_array_equal(accuracy["test_accuracy"], (classes[:, :5] == labels[:5]).mean(axis=1))
    np.testing.assert_array_equal(accuracy["train_accuracy"], (classes[:, 5:] == labels[5:]).mean(axis=1))


@pytest.mark.parametrize("engine, plasticity", [
    ("numpy", ""),
    ("numpy", ", eta_decay: 0.5, eta_decay_after: 1"),  # the interruption falls in the first epoch
    ("compiled", ", eta_decay: 0.5, eta_decay_after: 1"),
])
def test_interrupted_supervised_run_resumes_exactly(tmp_path: Path, engine: str, plasticity: str) -> None:
    data = write_npz(tmp_path / "data.npz")
    exp = load_experiment(write_supervised(tmp_path, str(data), epochs=4, every=1, plasticity=plasticity))
    exp.recording.chunk_records = 2
    plan = make_plan(exp, workers=1, engine=engine)
    store = tmp_path / "interrupted.zarr"
    create_store(plan, store)

    class Killed(Exception):
        pass

    def kill_after_two_chunks(_: int, calls: list[int] = []) -> None:  # noqa: B006
        calls.append(1)
        if len(calls) == 3:  # the first call reports the resume; then one per chunk
            raise Killed

    with pytest.raises(Killed):
        run_batch(store, plan, plan.batches[0], on_progress=kill_after_two_chunks)
    partial = palmc.open(store)["test_accuracy"].values
    assert np.isfinite(partial).any() and np.isnan(partial).any()
    run_batch(store, plan, plan.batches[0], resume=True)
    whole = tmp_path / "whole.zarr"
    create_store(plan, whole)
    run_batch(whole, plan, plan.batches[0])
    for name in ("test_accuracy", "train_accuracy", "WPP", "MSE"):
        xr.testing.assert_identical(palmc.open(store)[name].load(), palmc.open(whole)[name].load())
