"""Issue #19: a store that never destroys what it does not own, one writer at a time, integrity, hostile input.

Every finding of the adversarial review is a test here: bad input answers exit status 2 with a message naming the
file/field/option and writes nothing; faults (a second writer, deleted or truncated chunks, damaged checkpoints,
a full disk) are detected and repaired by ``--resume`` to a store identical to an uninterrupted run.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

import palmc
from palmc.cli import app
from palmc.store.writer import CHECKPOINT_DIR, StoreError
from tests.experiments import write_experiment

runner = CliRunner()
LEASE_FILE = f"{CHECKPOINT_DIR}/lease.json"  # palmc.store.lease.LEASE_FILE, spelled out: the contract of a store
LONG = dict(layers=(3, 5, 4, 2), epochs=6, dataset_size=4, Tpres=1.0, settling=1.0, every=10, chunk_records=5,
            models="  - {kind: FA}\n  - {kind: PAL}")


def _data(store: Path | str) -> xr.Dataset:
    """The recorded data and coordinates, without run bookkeeping and provenance."""
    ds = palmc.open(store).drop_vars(["run_status", "diverged_step"]).load()
    ds.attrs = {}
    return ds


def _refused(args: list[str], *expected: str) -> str:
    """Run the CLI; assert exit 2, a message containing every ``expected`` text, and no traceback."""
    result = runner.invoke(app, args)
    output = result.output
    assert result.exit_code == 2, (args, result.exit_code, output, result.exception)
    assert isinstance(result.exception, SystemExit), (args, result.exception)
    assert "Traceback" not in output
    for text in expected:
        assert text in output, (args, text, output)
    return output


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ---- ownership -------------------------------------------------------------------------------------------------
def test_overwrite_never_deletes_a_directory_that_is_not_a_palmc_store(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path)
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "thesis.tex").write_text("years of work")
    (docs / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    before = _files(docs)
    _refused(["simulate", str(exp), "-o", str(docs), "--overwrite", "--no-progress"], str(docs), "not a palmc store")
    assert _files(docs) == before
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    _refused(["simulate", str(exp), "-o", str(a_file), "--overwrite", "--no-progress"], str(a_file))
    assert a_file.read_text() == "keep me"
    # an empty directory and a palmc store may be replaced
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    for target in (empty, empty):
        result = runner.invoke(app, ["simulate", str(exp), "-o", str(target), "--overwrite", "--workers", "1",
                                     "--engine", "numpy", "--no-progress"])
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("where", ["", ".", "cwd", "parent", "home", "/"])
def test_root_like_output_paths_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    import shutil

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"palmc tried to delete or move {args[:2]}")

    # whatever happens, this test must not remove a real directory: deletion and moves fail in this process
    # (and in the processes it forks), and the home directory is a temporary one
    for module, name in ((shutil, "rmtree"), (os, "rename"), (os, "replace")):
        monkeypatch.setattr(module, name, never)
    exp = write_experiment(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "precious.txt").write_text("data")
    monkeypatch.chdir(work)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("settings")
    monkeypatch.setenv("HOME", str(home))
    target = {"cwd": str(work), "parent": str(tmp_path), "home": "~"}.get(where, where)
    _refused(["simulate", str(exp), "-o", target, "--overwrite", "--no-progress"], "output path")
    assert (work / "precious.txt").read_text() == "data" and (home / ".bashrc").read_text() == "settings"


def test_output_below_a_file_names_the_file(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path)
    (tmp_path / "file").write_text("x")
    _refused(["simulate", str(exp), "-o", str(tmp_path / "file" / "sub.zarr"), "--no-progress"],
             f"{tmp_path / 'file'} is a file, not a directory")


# ---- one writer at a time ---------------------------------------------------------------------------------------
def _start(exp: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "palmc", "simulate", str(exp), "--workers", "1", "--engine",
                             "numpy", "--no-progress", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.parametrize("flags", [
    ((), ("--overwrite",)),
    pytest.param((("--overwrite",), ("--overwrite",)), marks=pytest.mark.slow),  # ~20 s each under load
    pytest.param(((), ()), marks=pytest.mark.slow),
], ids=["new-then-overwrite", "both-overwrite", "both-new"])
def test_two_concurrent_writers_never_both_succeed(tmp_path: Path, flags: tuple[tuple[str, ...], ...]) -> None:
    exp = write_experiment(tmp_path, name="race", **LONG)
    store = tmp_path / "race.zarr"
    if flags[0]:  # both replace an existing (complete) store
        palmc.simulate(exp, workers=1, engine="numpy", progress=False)
    first = _start(exp, *flags[0])
    time.sleep(0.3)
    second = _start(exp, *flags[1])
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in (first, second)]
    codes = [code for code, _, _ in outcomes]
    assert codes.count(0) == 1 and sorted(codes) == [0, 2], outcomes
    loser = outcomes[codes.index(2)]
    assert "Traceback" not in loser[2] and ("being written by process" in loser[2] or "already exists" in loser[2])
    assert palmc.open(store).attrs["status"] == "complete"
    assert not (store / LEASE_FILE).exists()
    lone = palmc.simulate(exp, tmp_path / "lone.zarr", workers=1, engine="numpy", progress=False)
    xr.testing.assert_identical(_data(store), _data(lone))


def test_info_names_the_writer_and_a_stale_lease_is_taken_over_by_resume(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path, name="lease", **LONG)
    store = tmp_path / "lease.zarr"
    proc = _start(exp)
    deadline = time.time() + 120
    while time.time() < deadline and not list((store / CHECKPOINT_DIR).glob("*.progress.json")):
        time.sleep(0.05)
    result = runner.invoke(app, ["info", str(store)])
    assert f"writer       process {proc.pid}" in result.output, result.output
    _refused(["simulate", str(exp), "--resume", "--no-progress"], f"being written by process {proc.pid}")
    proc.kill()
    proc.communicate()
    assert (store / LEASE_FILE).exists()  # left by the killed writer
    result = runner.invoke(app, ["info", str(store)])
    assert "interrupted" in result.output and "gone" in result.output
    _refused(["simulate", str(exp), "--no-progress"], "already exists")
    result = runner.invoke(app, ["simulate", str(exp), "--resume", "--no-progress", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert f"took over the lease of {store}" in result.output
    lone = palmc.simulate(exp, tmp_path / "lone.zarr", workers=1, engine="numpy", progress=False)
    xr.testing.assert_identical(_data(store), _data(lone))


def test_staging_directories_left_by_a_killed_layout_are_cleaned(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path)
    palmc.simulate(exp, tmp_path / "template.zarr", workers=1, engine="numpy", progress=False)
    leftover = tmp_path / ".exp.zarr.k1ll3d"  # what a layout killed before its swap leaves
    leftover.mkdir()
    os.rename(tmp_path / "template.zarr", leftover / "store.zarr")
    unrelated = tmp_path / ".exp.zarr.mine"
    unrelated.mkdir()
    (unrelated / "keep.txt").write_text("not palmc's")
    palmc.simulate(exp, workers=1, engine="numpy", progress=False)
    assert not leftover.exists()
    assert (unrelated / "keep.txt").read_text() == "not palmc's"


# ---- integrity ---------------------------------------------------------------------------------------------------
def _chunk_files(store: Path, variable: str) -> list[Path]:
    return sorted(p for p in (store / variable / "c").rglob("*") if p.is_file())


@pytest.mark.parametrize("fault", ["delete chunk", "truncate chunk", "alter chunk", "truncate checkpoint"])
def test_damage_is_reported_and_resume_repairs_it(tmp_path: Path, fault: str) -> None:
    exp = write_experiment(tmp_path, name="dmg", seeds=(11, 12), epochs=3, every=2, chunk_records=4)
    store = palmc.simulate(exp, workers=1, engine="numpy", progress=False, seeds_per_batch=1)
    clean = _data(store)
    chunk = _chunk_files(store, "WPP")[3]
    if fault == "delete chunk":
        chunk.unlink()
    elif fault == "truncate chunk":
        chunk.write_bytes(chunk.read_bytes()[:10])
    elif fault == "alter chunk":
        data = bytearray(chunk.read_bytes())
        data[-1] ^= 0xFF
        chunk.write_bytes(bytes(data))
    else:
        checkpoint = store / CHECKPOINT_DIR / "batch0001.npz"
        checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    batch = "batch0001" if fault == "truncate checkpoint" else json.dumps(
        [label for label in ("batch0000", "batch0001")
         if str(chunk.relative_to(store)) in (store / CHECKPOINT_DIR / f"{label}.chunks.json").read_text()])[2:-2]
    result = runner.invoke(app, ["verify", str(store)])
    assert result.exit_code == 1, result.output
    assert batch in result.output and ("WPP" in result.output or "checkpoint" in result.output), result.output
    if fault in ("delete chunk", "truncate chunk"):  # info checks presence and size (no data read)
        result = runner.invoke(app, ["info", str(store)])
        assert result.exit_code == 1 and "DAMAGED" in result.output and "variable WPP" in result.output
    result = runner.invoke(app, ["simulate", str(exp), "--resume", "--no-progress", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert f"{batch} runs again from its start" in result.output
    assert runner.invoke(app, ["verify", str(store)]).exit_code == 0
    xr.testing.assert_identical(_data(store), clean)


def test_unreadable_data_answers_with_a_message(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path)
    store = palmc.simulate(exp, workers=1, engine="numpy", progress=False)
    for chunk in _chunk_files(store, "WPP"):
        chunk.write_bytes(b"\0" * 7)
    queries = tmp_path / "q.yaml"
    queries.write_text("queries:\n  final:\n    metric: angle_BPP_WPPT\n    aggregate: last\n    reduce: mean\n")
    _refused(["analyze", str(store), str(queries)], "cannot read the data", "palmc verify")


# ---- disk full ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["chunk", "checkpoint"])
def test_disk_full_leaves_an_interrupted_store_that_resume_completes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     where: str) -> None:
    import palmc.store.location as location_module
    import palmc.store.writer as writer_module

    exp = write_experiment(tmp_path, name="full", **LONG)
    calls = {"n": 0}

    def full_after_some(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(*args, **kwargs)

    if where == "chunk":
        original = writer_module.ChunkWriter.write
        monkeypatch.setattr(writer_module.ChunkWriter, "write",
                            lambda self, *a: full_after_some(self, *a))
    else:
        original = location_module.os.replace

        def replace(src: str, dst: str) -> None:
            if str(dst).endswith(".npz"):
                return full_after_some(src, dst)
            return os.rename(src, dst)

        monkeypatch.setattr(location_module.os, "replace", replace)
    with pytest.raises(StoreError, match="No space left on device.*--resume"):
        palmc.simulate(exp, workers=1, engine="numpy", progress=False)
    monkeypatch.undo()
    store = tmp_path / "full.zarr"
    assert palmc.open(store).attrs["status"] == "interrupted"
    left = [p.name for p in (store / CHECKPOINT_DIR).iterdir()]
    assert all(name.endswith((".npz", ".json")) or name == "zarr.json" for name in left), left
    assert not (store / LEASE_FILE).exists()
    result = runner.invoke(app, ["simulate", str(exp), "--resume", "--no-progress", "--workers", "1"])
    assert result.exit_code == 0, result.output
    lone = palmc.simulate(exp, tmp_path / "lone.zarr", workers=1, engine="numpy", progress=False)
    xr.testing.assert_identical(_data(store), _data(lone))


def test_disk_full_on_a_cluster_worker_interrupts_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import palmc.store.writer as writer_module

    exp = write_experiment(tmp_path, name="full", seeds=(11, 12), every=2)
    monkeypatch.setenv("PALMC_LOCAL_PROCESSES", "0")  # thread workers: they see this test's patch

    def full(self: object, *args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer_module.ChunkWriter, "write", full)
    with pytest.raises(StoreError, match="No space left on device.*--resume"):
        palmc.simulate(exp, workers=2, seeds_per_batch=1, engine="numpy", progress=False)
    monkeypatch.undo()
    store = tmp_path / "full.zarr"
    assert palmc.open(store).attrs["status"] == "interrupted"
    result = runner.invoke(app, ["simulate", str(exp), "--resume", "--no-progress", "--workers", "1"])
    assert result.exit_code == 0, result.output
    lone = palmc.simulate(exp, tmp_path / "lone.zarr", workers=1, engine="numpy", progress=False)
    xr.testing.assert_identical(_data(store), _data(lone))


# ---- hostile YAML -------------------------------------------------------------------------------------------------
BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("text, expected", [
    (BOMB, "alias bomb"),
    ("name: &a [*a]\n", "refers to a node containing it"),
    ("a: &a\n  b: *a\n", "refers to a node containing it"),
    ("[" * 5000 + "]" * 5000, "nested at most"),
    ("{a: " * 3000 + "1" + "}" * 3000, "nested at most"),
    ("name: x\0y\n", "malformed YAML"),
], ids=["alias-bomb", "self-alias", "self-alias-mapping", "5000-brackets", "3000-braces", "NUL-byte"])
@pytest.mark.parametrize("command", ["validate", "simulate"])
def test_hostile_yaml_is_refused(tmp_path: Path, text: str, expected: str, command: str) -> None:
    assert len(BOMB) < 400
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    extra = ["--no-progress", "-o", str(tmp_path / "x.zarr")] if command == "simulate" else []
    _refused([command, str(path), *extra], str(path), expected)
    assert not (tmp_path / "x.zarr").exists()


def test_hostile_query_files_are_refused(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path)
    store = palmc.simulate(exp, workers=1, engine="numpy", progress=False)
    queries = tmp_path / "q.yaml"
    for text in (BOMB, "q: &a [*a]\n", "[" * 5000 + "]" * 5000):
        queries.write_text(text)
        _refused(["analyze", str(store), str(queries)], str(queries))


# ---- sizes ----------------------------------------------------------------------------------------------------------
def test_a_run_that_cannot_fit_in_memory_is_refused_before_writing(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path, layers=(10000, 100000, 10000, 1000))
    result = runner.invoke(app, ["validate", str(exp)])
    assert result.exit_code == 0 and "DOES NOT FIT" in result.output and "GiB" in result.output, result.output
    _refused(["simulate", str(exp), "--no-progress"], "GiB of memory", "--seeds-per-batch")
    assert not (tmp_path / "exp.zarr").exists()


def test_huge_time_axes_and_seed_lists_validate_without_allocating(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path, epochs=10**9, every=1)
    result = runner.invoke(app, ["validate", str(exp)])
    assert result.exit_code == 0, result.output
    assert "30000000030 records" in result.output.replace(" on the time axis", " records")
    _refused(["simulate", str(exp), "--no-progress"], "GiB of memory")
    assert not (tmp_path / "exp.zarr").exists()
    many = write_experiment(tmp_path, name="many", seeds=tuple(range(100_000)))
    result = runner.invoke(app, ["validate", str(many)])
    assert result.exit_code == 0 and "100000 seeds" in result.output, result.output
    repeated = write_experiment(tmp_path, name="rep", seeds=(*range(50_000), 7, 9))
    _refused(["validate", str(repeated)], "seeds", "repeated 7, 9")


# ---- schedulers ------------------------------------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_and_garbage_schedulers_fail_before_any_store(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    exp = write_experiment(tmp_path)
    store = tmp_path / "exp.zarr"
    base = ["simulate", str(exp), "--no-progress", "--connect-timeout", "1"]
    _refused([*base, "--scheduler", f"tcp://127.0.0.1:{_closed_port()}"], "cannot connect to the Dask scheduler")
    assert not store.exists()
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        _refused([*base, "--scheduler", f"tcp://127.0.0.1:{silent.getsockname()[1]}"], "within 1 s")
    assert not store.exists()
    _refused([*base, "--scheduler", "garbage"], "--scheduler", "tcp://host:8786")
    monkeypatch.setenv("PALMC_SCHEDULER", "not an address")
    _refused(base, "$PALMC_SCHEDULER", "'not an address'")
    _refused(["validate", str(exp)], "$PALMC_SCHEDULER")
    monkeypatch.delenv("PALMC_SCHEDULER")
    assert not store.exists()
    exp.write_text(exp.read_text() + "compute: {scheduler: 'tcp://:::x'}\n")
    _refused(["validate", str(exp)], "compute.scheduler", "tcp://host:8786")


# ---- resume settings -------------------------------------------------------------------------------------------------
def test_resume_refuses_settings_that_change_results(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path)
    store = palmc.simulate(exp, workers=1, engine="numpy", progress=False, seeds_per_batch=1)
    _refused(["simulate", str(exp), "--resume", "--engine", "compiled", "--no-progress"], "--engine numpy")
    _refused(["simulate", str(exp), "--resume", "--seeds-per-batch", "2", "--no-progress"], "--seeds-per-batch 1")
    assert palmc.open(store).attrs["engine"] == "numpy"


# ---- bad input of every kind -----------------------------------------------------------------------------------------
def _bad_inputs(tmp_path: Path) -> list[tuple[list[str], tuple[str, ...]]]:
    exp = write_experiment(tmp_path)
    store = palmc.simulate(exp, tmp_path / "good.zarr", workers=1, engine="numpy", progress=False)
    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"x": ("seed", np.arange(3.0))}).to_zarr(foreign, zarr_format=3, consolidated=False)
    wide_true = tmp_path / "true.yaml"
    wide_true.write_text(exp.read_text().replace("layers: [3, 4, 2]", "layers: [3, true, 2]"))
    rare = tmp_path / "rare.yaml"
    rare.write_text(exp.read_text().replace("every: 1", "every: 100000"))
    binary = tmp_path / "params.json"
    binary.write_bytes(bytes(range(256)) * 4)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("queries:\n  caf\xe9: {metric: MSE}\n".encode("latin-1"))
    slash = tmp_path / "slash.yaml"
    slash.write_text("queries:\n  a/b:\n    metric: angle_BPP_WPPT\n    aggregate: last\n")
    legacy = Path(__file__).parent / "data" / "legacy" / "Fig3abc.json"
    read_only = Path("/proc/palmc-cannot-write/c.yaml")  # not writable, even by root
    sim = ["simulate", str(exp), "--no-progress"]
    return [
        ([*sim, "--seeds-per-batch", "0"], ("--seeds-per-batch",)),
        ([*sim, "--seeds-per-batch", "-3"], ("--seeds-per-batch",)),
        ([*sim, "--workers", "0"], ("--workers",)),
        ([*sim, "--workers", "-1"], ("--workers",)),
        ([*sim, "--resume", "--overwrite"], ("--overwrite and --resume",)),
        (["validate", str(wide_true)], ("network.layers", "integer")),
        (["validate", str(rare)], ("recording.every", "100000")),
        (["analyze", str(store), str(tmp_path / "missing.yaml")], ("missing.yaml", "no such file")),
        (["analyze", str(store), str(latin)], (str(latin), "UTF-8")),
        (["analyze", str(store), str(tmp_path)], (str(tmp_path), "directory")),
        (["analyze", str(store), str(slash), "-o", str(tmp_path / "r.zarr")], ("'a/b'", "'/'")),
        (["convert", str(binary), "--task", "bw_only", "-o", str(tmp_path / "c.yaml")], (str(binary), "UTF-8")),
        (["convert", str(legacy), "--task", "bw_only", "-o", str(read_only)], (str(read_only), "cannot write")),
        (["convert", str(legacy), "--task", "bw_only", "-o", str(tmp_path), "--overwrite"], ("is a directory",)),
        (["info", str(foreign)], (str(foreign), "not one palmc wrote")),
        (["plot", str(foreign), "-o", str(tmp_path / "d.html")], (str(foreign), "not one palmc wrote")),
        (["verify", str(foreign)], (str(foreign), "not one palmc wrote")),
        (["info", str(tmp_path / "nothing.zarr")], ("does not exist",)),
        ([*sim, "-o", str(foreign), "--overwrite", "--engine", "numpy"], ("not a palmc store",)),
        ([*sim, "-o", str(foreign), "--resume"], ("not one palmc wrote", "cannot be resumed")),
    ]


BAD_INPUTS = ["seeds-per-batch-0", "seeds-per-batch-negative", "workers-0", "workers-negative", "resume-overwrite",
              "true-layer-width", "every-beyond-run", "query-file-missing", "query-file-not-utf8",
              "query-file-directory", "query-name-slash-zarr", "convert-binary", "convert-read-only",
              "convert-onto-directory", "info-foreign", "plot-foreign", "verify-foreign", "info-missing",
              "overwrite-foreign", "resume-foreign"]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[list[str], tuple[str, ...]]]]:
    folder = tmp_path_factory.mktemp("bad")
    cases = _bad_inputs(folder)
    assert len(cases) == len(BAD_INPUTS)
    return folder, dict(zip(BAD_INPUTS, cases))


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_every_bad_input_answers_exit_2_and_writes_nothing(bad_inputs: tuple[Path, dict], case: str) -> None:
    folder, cases = bad_inputs
    args, expected = cases[case]
    before = _files(folder)
    _refused(args, *expected)
    assert _files(folder) == before
    assert not (folder / "d.html").exists() and not (folder / "r.zarr").exists()


def test_info_says_when_runs_diverged(tmp_path: Path) -> None:
    models = "  - {kind: FA}\n  - {kind: FA, name: unstable, overrides: {plasticity: {eta_fw: [1.0e+8, 1.0e+8]}}}"
    exp = write_experiment(tmp_path, task="fw_bw", layers=(2, 3, 2), seeds=(11, 12), models=models, epochs=20,
                           every=1, variables="WPP, uP", activation="linear")
    result = runner.invoke(app, ["simulate", str(exp), "--no-progress", "--workers", "1", "--engine", "numpy"])
    assert result.exit_code == 1
    result = runner.invoke(app, ["info", str(tmp_path / "exp.zarr")])
    assert "complete, 2 of 4 runs diverged" in result.output, result.output


def test_api_refuses_bad_counts(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path)
    for kwargs in ({"seeds_per_batch": 0}, {"seeds_per_batch": -1}, {"workers": -1}, {"workers": True}):
        with pytest.raises(StoreError, match="at least 1"):
            palmc.simulate(exp, progress=False, **kwargs)
    assert not (tmp_path / "exp.zarr").exists()
    url = f"memory://palmc-{uuid.uuid4().hex}"
    with pytest.raises(StoreError, match="root of a bucket"):
        palmc.simulate(exp, url, progress=False, workers=1)
