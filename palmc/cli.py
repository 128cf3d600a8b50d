"""The ``palmc`` command: a thin shell over the Python API.

Every user error (bad experiment file, bad store, bad query) prints one clear message and exits with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperArgument, TyperGroup



class _PlainHelpGroup(TyperGroup):
    """Help as in other command-line tools: arguments in usage lines as ``EXPERIMENT`` (not ``{experiment}``), and
    no ``<bool>`` beside on/off flags (typer's defaults)."""

    def main(self, *args, **kwargs):
        for command in [self, *self.commands.values()]:
            for param in command.params:
                _plain_help(param)
            command.get_help_option = _plain_help_option(command.get_help_option)
        return super().main(*args, **kwargs)


def _plain_help(param) -> None:
    if isinstance(param, TyperArgument):
        name = param.name.upper()
        param.metavar = name
        usage = name if param.required else f"[{name}]"
        param._usage_display_name = lambda: usage  # typer's hook for the usage line
    elif getattr(param, "is_flag", False):
        param.display_type_rich = lambda ctx: None


def _plain_help_option(get_help_option):
    def plain(ctx):
        option = get_help_option(ctx)
        if option is not None:
            _plain_help(option)
        return option
    return plain


app = typer.Typer(cls=_PlainHelpGroup, add_completion=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Simulate and analyse dendritic microcircuits that learn their feedback weights (BP, FA, PAL).")

USER_ERROR = 2
DAMAGED = 1  # a store with missing or damaged chunks (info, verify)


def _print_version(value: bool) -> None:
    if value:
        from palmc import __version__

        typer.echo(f"palmc {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print palmc's version and exit.")) -> None:
    """Simulate and analyse dendritic microcircuits that learn their feedback weights (BP, FA, PAL)."""


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(USER_ERROR)


def _user_errors() -> tuple[type[BaseException], ...]:
    from palmc.schema import ExperimentError
    from palmc.store.writer import StoreError

    from palmc.distributed import SchedulerError
    from palmc.store.location import MissingFilesystemPackage

    errors: list[type[BaseException]] = [ExperimentError, StoreError, SchedulerError, MissingFilesystemPackage]
    try:
        from palmc.query import QueryError

        errors.append(QueryError)
    except ImportError:  # pragma: no cover - the query layer is optional at import time
        pass
    return tuple(errors)


def _load(path: Path):
    from palmc.schema import load_experiment
    from palmc.schema.legacy import is_reference_params

    if is_reference_params(path):
        _fail(f"{path} is a parameter file of the reference code (PAL MC), not a palmc experiment; convert it "
              f"first: palmc convert {path} --task bw_only -o experiment.yaml (or --task fw_bw)")
    return load_experiment(path)


@app.command()
def convert(
    params: Path = typer.Argument(..., help="A reference params.json file."),
    task: str = typer.Option(..., "--task", help="bw_only or fw_bw (the reference passes it on the command line)."),
    output: Path = typer.Option(..., "-o", "--output", help="Experiment YAML file to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    """Turn a reference params.json into a palmc experiment file, reporting every key palmc does not use."""
    try:
        from palmc.schema import convert_legacy, dump_experiment

        if task not in ("bw_only", "fw_bw"):
            _fail(f"--task must be bw_only or fw_bw, got {task!r}")
        if output.is_dir():
            _fail(f"-o {output} is a directory; give the path of the experiment YAML file to write")
        if output.exists() and not overwrite:
            _fail(f"{output} already exists; pass --overwrite to replace it")
        experiment, notes = convert_legacy(params, task)
        dump_experiment(experiment, output)
    except _user_errors() as err:
        _fail(str(err))
    except OSError as err:
        _fail(f"cannot write -o {output}: {err.strerror or err}")
    for note in notes:
        typer.echo(f"note: {note}")
    typer.echo(f"wrote {output}")


@app.command()
def validate(experiment: Path = typer.Argument(..., help="Experiment YAML file.")) -> None:
    """Check an experiment file without running it and print what would run."""
    from palmc.plan import make_plan

    from palmc.api import check_fits_memory, scheduler_address

    try:
        exp = _load(experiment)
        plan = make_plan(exp)
        scheduler_address(None, exp.compute)  # $PALMC_SCHEDULER or compute.scheduler, as simulate would use
    except _user_errors() as err:
        _fail(str(err))
    try:
        check_fits_memory(plan, 1)
        fits = "fits this machine"
    except _user_errors() as err:
        fits = f"DOES NOT FIT: {err}"
    from palmc.schema.sweep import LISTED_VARIANTS, summarise_labels, summarise_values

    typer.echo(f"{experiment}: valid")
    typer.echo(f"  experiment  {plan.name} ({plan.protocol.task})")
    typer.echo(f"  network     {'-'.join(map(str, plan.layers))}")
    variants = f" x {len(plan.variants)} variants" if plan.has_variants else ""
    typer.echo(f"  runs        {plan.n_runs} = {len(plan.seeds)} seeds x {len(plan.model_names)} models "
               f"({', '.join(plan.model_names)}){variants} in {len(plan.batches)} batch(es)")
    def time_course(variant) -> str:
        proto = variant.protocol
        return (f"steps/run   {proto.total_steps} ({proto.settling_steps} settling + {proto.epochs} epochs x "
                f"{proto.steps_per_epoch}), {variant.n_records} records (every {variant.every} steps)")

    if len(plan.variants) <= LISTED_VARIANTS:
        for variant in plan.variants:
            prefix = f"  variant {variant.index}   {variant.label}\n    " if plan.has_variants else "  "
            typer.echo(f"{prefix}{time_course(variant)}")
    else:  # a large sweep: its swept fields, a few labels and each distinct time course once
        names = plan.swept_names
        typer.echo(f"  variants    {summarise_labels([v.label for v in plan.variants])}")
        for path in plan.swept:
            typer.echo(f"  swept       {summarise_values(names[path], [v.values[path] for v in plan.variants])}")
        courses: dict[str, int] = {}
        for variant in plan.variants:
            courses[time_course(variant)] = courses.get(time_course(variant), 0) + 1
        for text, count in courses.items():
            typer.echo(f"  {count} variant(s): {text}")
    typer.echo(f"  records     {plan.n_records} on the time axis, {plan.chunk_records} per chunk")
    data = plan.protocol.data
    if data is not None:
        typer.echo(f"  dataset     {data.source}: {data.n_train} training, {data.n_test} test samples, "
                   f"{data.n_classes} classes; {len(plan.eval_epochs)} evaluations (test set and "
                   f"{plan.protocol.eval_train_samples} training samples)")
    typer.echo(f"  variables   {', '.join(v.name for v in plan.variables)}")
    typer.echo(f"  store       {exp.output.store}, about {plan.memory.store_bytes / 2**20:.1f} MiB uncompressed")
    typer.echo(f"  memory      about {plan.memory.batch_bytes / 2**20:.1f} MiB per batch "
               f"({plan.seeds_per_batch} seed(s) per batch); {fits}")
    typer.echo(f"  engine      {plan.engine}")


@app.command()
def simulate(
    experiment: Path = typer.Argument(..., help="Experiment YAML file."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Zarr store to write: a path, or an fsspec URL such as s3://bucket/run.zarr (default: the experiment's output.store)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted store from its last checkpoint."),
    engine: Optional[str] = typer.Option(None, "--engine", help="numpy or compiled (default: the experiment's compute.engine)."),
    seeds_per_batch: Optional[int] = typer.Option(None, "--seeds-per-batch", min=1, help="Runs of how many seeds advance together (default: seeds / workers; in a sweep, all seeds and as many variants as their work is worth)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Workers of the local Dask cluster (default: one per core; 1 runs in-process)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Address of an existing Dask scheduler, e.g. tcp://host:8786 (or set PALMC_SCHEDULER)."),
    connect_timeout: Optional[float] = typer.Option(None, "--connect-timeout", min=0.001, help="Seconds to wait for the Dask scheduler (default: compute.connect_timeout, 20)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Run an experiment and stream its recordings into a Zarr store."""
    from palmc.api import RunFailures, simulate as run

    if engine not in (None, "numpy", "compiled"):
        _fail(f"--engine must be numpy or compiled, got {engine!r}")
    if resume and overwrite:
        _fail("--overwrite and --resume exclude each other: --resume continues the store, --overwrite replaces "
              "it; pass one of them")
    try:
        exp = _load(experiment)
        store = run(exp, output, overwrite=overwrite, resume=resume, engine=engine, progress=progress,
                    seeds_per_batch=seeds_per_batch, workers=workers, scheduler=scheduler,
                    connect_timeout=connect_timeout, log=lambda text: typer.echo(f"note: {text}", err=True))
    except _user_errors() as err:
        _fail(str(err))
    except RunFailures as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(f"wrote {store}")


@app.command()
def info(store: str = typer.Argument(..., help="A palmc Zarr store (path or URL).")) -> None:
    """Summarise a store: experiment, models, seeds, dims, variables, status, size and provenance."""
    from palmc.api import StoreDamaged, info as describe

    try:
        typer.echo(describe(store))
    except _user_errors() as err:
        _fail(str(err))
    except (OSError, ValueError, KeyError) as err:
        _fail(f"{store} is not a readable palmc store ({err})")
    except StoreDamaged as err:
        typer.echo(str(err))
        raise typer.Exit(DAMAGED)


@app.command()
def verify(store: str = typer.Argument(..., help="A palmc Zarr store (path or URL).")) -> None:
    """Check that every chunk the batches wrote is there, whole and unchanged, and every checkpoint loads.

    Exit status 0: intact; 1: damaged (listed by batch and variable; --resume repairs); 2: not a palmc store."""
    from palmc.api import StoreDamaged, verify_store

    try:
        typer.echo(verify_store(store))
    except _user_errors() as err:
        _fail(str(err))
    except StoreDamaged as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        raise typer.Exit(DAMAGED)


def _open_store(store: str):
    from palmc.api import open as open_store
    from palmc.store.location import StoreLocation
    from palmc.store.ownership import require_palmc_store
    from palmc.store.writer import StoreError

    require_palmc_store(StoreLocation(store))
    try:
        return open_store(store)
    except (OSError, ValueError, KeyError) as err:
        raise StoreError(f"{store} is not a readable palmc store ({err})") from err


# what reading damaged chunks raises (the codecs' errors name no file)
_DATA_ERRORS = (RuntimeError, ValueError, OSError, EOFError)


def _unreadable(store: str, err: BaseException) -> str:
    return (f"cannot read the data of {store} ({type(err).__name__}: {err}); `palmc verify {store}` lists "
            "missing or damaged chunks, and `palmc simulate --resume` re-runs their batches")


@app.command()
def analyze(
    store: str = typer.Argument(..., help="A palmc Zarr store (path or URL)."),
    queries: Path = typer.Argument(..., help="YAML file of named queries (queries: {name: {metric: ..., ...}})."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the full results (.zarr, .nc or .csv)."),
) -> None:
    """Evaluate declarative queries lazily over a store and print a table of the scalar results."""
    from palmc.query import format_table, run_query_file, save_results

    try:
        results = run_query_file(_open_store(store), queries)
        typer.echo(format_table(results))
        if output is not None:
            save_results(results, output)
            typer.echo(f"wrote {output}")
    except _user_errors() as err:
        _fail(str(err))
    except _DATA_ERRORS as err:
        _fail(_unreadable(store, err))


@app.command()
def metrics(name: Optional[str] = typer.Argument(None, help="One metric to describe (default: all).")) -> None:
    """List the metrics of queries: description, units, the variables each needs and its arguments."""
    from palmc.query import describe_metrics, get_metric

    try:
        typer.echo(describe_metrics(details=True) if name is None else get_metric(name).describe())
    except _user_errors() as err:
        _fail(str(err))
    typer.echo("\nAny recorded variable can be queried too (variable: NAME); the query language: docs/queries.md")


@app.command()
def plot(
    store: str = typer.Argument(..., help="A palmc Zarr store (path or URL)."),
    queries: Optional[Path] = typer.Argument(None, help="Optional YAML file of queries to plot."),
    output: Path = typer.Option(Path("dashboard.html"), "-o", "--output", help="Standalone HTML file to write."),
) -> None:
    """Draw an interactive dashboard (HoloViews/bokeh, one offline HTML file) from a store."""
    from palmc.plots import save_dashboard

    try:
        path = save_dashboard(_open_store(store), output, queries_path=queries)
    except _user_errors() as err:
        _fail(str(err))
    except _DATA_ERRORS as err:
        _fail(_unreadable(store, err))
    typer.echo(f"wrote {path}")


@app.command()
def reproduce(
    figure: str = typer.Argument(..., help="fig3abc, fig3def, fig4ab, fig6 or yinyang (the files experiments/<figure>.yaml)."),
    outdir: Optional[Path] = typer.Option(None, "-o", "--outdir", help="Directory of the report and plots (default: results/<figure>)."),
    short: bool = typer.Option(False, "--short", help="Run a shortened copy (a couple of epochs): a quick smoke test."),
    store: Optional[Path] = typer.Option(None, "--store", help="Zarr store to use (default: the experiment's output.store; OUTDIR/<figure>-short.zarr with --short)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Workers of the local Dask cluster (default: one per core)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Simulate again even if the store exists."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Reproduce a figure of the paper: simulate (or reuse) its store, then write plots and a report with the key numbers."""
    from palmc.api import RunFailures
    from palmc.reproduce import FigureError, reproduce as run

    try:
        report = run(figure, outdir, short=short, store=store, workers=workers, overwrite=overwrite,
                     progress=progress, log=typer.echo)
    except (FigureError, *_user_errors()) as err:
        _fail(str(err))
    except RunFailures as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(f"report: {report}")


def main() -> None:  # pragma: no cover
    sys.exit(app())
