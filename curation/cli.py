"""The `curation` command line: the SDK's verbs plus demo and serve, with clear errors and progress."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from curation.inference.client import ServiceError
from curation.dataset.tags import class_label, describe_filters, parse_filters
from curation.dataset.registry import DatasetNotFound, DatasetType, DemoDatasetProtected, TransientFailures
from curation.processes import WATCHDOG_OWNER, start_watchdog  # noqa: F401 - WATCHDOG_OWNER for tests
from curation.sdk import Curation
from curation.ingest.storage import AzureStorageConfig, LocalStorageConfig, StorageError
from curation.ingest.validation import DatasetTooSmall

app = typer.Typer(
    help="Curate image datasets: tag, embed, analyse and sample.", no_args_is_help=True, pretty_exceptions_enable=False
)
console = Console()
err = Console(stderr=True)
KNOWN_ERRORS = (
    DatasetTooSmall, StorageError, ServiceError, DatasetNotFound, DemoDatasetProtected, TransientFailures, ValueError
)
# Commands that run Prefect flows: without --debug, Prefect's console shows no traceback for them.
FLOW_COMMANDS = {"curate", "curate-new", "track", "demo", "sample", "teach"}
_debug = False


@app.callback()
def options(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option(help="Show tracebacks, Prefect's too (also CURATION_DEBUG=1)")] = False,
) -> None:
    """Curate image datasets: tag, embed, analyse and sample."""
    global _debug
    _debug = debug or bool(os.environ.get("CURATION_DEBUG"))
    if not _debug and ctx.invoked_subcommand in FLOW_COMMANDS:
        quiet_prefect_console()


class _NoRunFailureTracebacks(logging.Filter):
    """On Prefect's console handler without --debug: drop the flow and task run loggers' failure reports (about 80
    lines of traceback, and the failure's message, a dataset's reason included, again in the final state),
    azure.identity's warnings, and any other record's traceback; the CLI reports the failure itself, once, in one
    line. Prefect's API handler, and so its UI, still receives everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("azure.identity") and record.levelno < logging.ERROR:
            return False  # each try's full credential-chain report: the error line says what failed and what to do
        message = str(record.msg)
        failed = message.startswith("Finished in state") and not message.startswith("Finished in state Completed")
        run_logger = record.name.startswith(("prefect.flow_runs", "prefect.task_runs"))
        if run_logger and (failed or record.levelno >= logging.ERROR):
            return False
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def quiet_prefect_console() -> None:
    """Install `_NoRunFailureTracebacks` on Prefect's console handlers (importing prefect.main sets up its logging)."""
    import prefect.main  # noqa: F401 - configures Prefect's logging: its console handler on the root logger
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, _NoRunFailureTracebacks) for f in handler.filters
        ):
            handler.addFilter(_NoRunFailureTracebacks())


def one_line(exc: BaseException) -> str:
    """An error as one line: a storage service's multi-line XML body, or a wrapped message, on one line."""
    return " ".join(str(exc).split())


def _fail(exc: BaseException) -> None:
    err.print(f"[bold red]error:[/] {escape(one_line(exc))}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def _track_with_progress(cr: Curation, dataset_id: str) -> str:
    """Run the tracking flow to the end, with a progress bar read from the dataset's record (which each of the
    tracker's polls updates)."""
    stop = threading.Event()

    def show() -> None:
        with Progress(TextColumn("inference"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("inference", total=None)
            while True:
                try:
                    counts = cr.get_dataset(dataset_id).counts
                except DatasetNotFound:  # the tracking flow says so in one line; a thread's traceback would not
                    return
                bar.update(task, total=counts.accepted, completed=counts.processed + counts.failed)
                if stop.wait(0.5):
                    return

    shown = threading.Thread(target=show, daemon=True, name="progress")
    shown.start()
    try:
        return cr.tracing_curation_task(dataset_id, tracing=True)
    finally:
        stop.set()
        shown.join()


def _summary(cr: Curation, dataset_id: str, labels_csv: Path | None = None) -> None:
    record = cr.get_dataset(dataset_id)
    console.print(f"dataset [bold]{record.id}[/] {record.name!r}: [bold]{record.status.value}[/]", highlight=False)
    if record.failure_reason:
        console.print(f"reason: {record.failure_reason}", highlight=False)
    c = record.counts
    console.print(f"{c.found} found, {c.accepted} accepted, {c.processed} processed, {c.failed} failed", highlight=False)
    if c.retryable:
        console.print(
            f"{c.retryable} of the failed images failed for a transient reason (storage unreachable or throttled): "
            f"`curation curate --resume {record.id}` processes them again",
            highlight=False,
        )
    if record.status.value == "Failed":
        raise typer.Exit(1)  # scripts and schedulers see the failure
    if record.status.value != "Completed":
        return
    from curation.dataset.export import load_results
    from curation.dataset.counts import class_counts, labelled_counts

    counts = class_counts(load_results(cr.catalog.dataset(dataset_id)))
    columns = ["category", "class", "images"]
    if labels_csv is not None and labels_csv.exists():
        labels = pl.read_csv(labels_csv, infer_schema=False)
        counts = counts.join(labelled_counts(labels), on=["category", "class"], how="left")
        columns.append("labelled")
    table = Table(*columns, title=f"images per class (predicted by {record.meta_model})")
    for row in counts.iter_rows(named=True):
        table.add_row(*[class_label(v) if k == "class" else str(v) for k, v in row.items()])
    console.print(table)
    if "labelled" in columns:
        from curation.dataset.counts import agreement

        scores = agreement(load_results(cr.catalog.dataset(dataset_id)), labels)
        parts = [f"{r['category']} {r['accuracy']:.0%} ({r['agree']}/{r['labelled']}, {r['none_share']:.0%} None)"
                 for r in scores.iter_rows(named=True) if r["labelled"]]
        console.print("agreement with the labels: " + "; ".join(parts), highlight=False)
        console.print("  (synthetic scenes, which the model never trained on; on real photos see docs/model.md)",
                      highlight=False)


AzureAdOption = Annotated[bool, typer.Option(
    "--azure-ad", help="Sign in with Azure AD (DefaultAzureCredential, or CURATION_AZURE_CLIENT_* for a service "
    "principal) instead of a key or SAS")]


def _storage_config(
    container: str | None, account_name: str | None, account_url: str | None, prefix: str | None, local: Path | None,
    azure_ad: bool,
) -> LocalStorageConfig | AzureStorageConfig:
    """The storage the options name: exactly one of a container or a folder; --azure-ad only with a container."""
    if (container is None) == (local is None):
        _fail(ValueError("give exactly one of --container or --local"))
    if local is not None:
        if azure_ad:
            _fail(ValueError("--azure-ad signs in to Azure Storage: use it with --container, not --local"))
        return LocalStorageConfig(path=local, prefix=prefix)
    return AzureStorageConfig(container_name=container, account_name=account_name, account_url=account_url,
                              prefix=prefix, azure_ad=azure_ad)


@app.command()
def curate(
    name: Annotated[str, typer.Option(help="Dataset name")],
    container: Annotated[str | None, typer.Option(help="Azure container name")] = None,
    account_name: Annotated[str | None, typer.Option(help="Azure storage account")] = None,
    account_url: Annotated[str | None, typer.Option(help="Blob endpoint, e.g. for Azurite")] = None,
    prefix: Annotated[str | None, typer.Option(help="Only blobs under this prefix")] = None,
    local: Annotated[Path | None, typer.Option(help="A local folder instead of a container")] = None,
    azure_ad: AzureAdOption = False,
    wait: Annotated[bool, typer.Option(help="Track the job to its end")] = True,
    resume: Annotated[str | None, typer.Option(help="Finish an unfinished dataset with this id")] = None,
    dask: Annotated[bool, typer.Option(help="Run the shard tasks on Dask (a LocalCluster unless --dask-address)")] = False,
    dask_address: Annotated[str | None, typer.Option(help="Dask scheduler to use, e.g. tcp://host:8786")] = None,
) -> None:
    """Curate a container (credentials from CURATION_AZURE_ACCOUNT_KEY, _SAS_TOKEN or _CONNECTION_STRING, or Azure AD
    with --azure-ad) or a folder."""
    config = _storage_config(container, account_name, account_url, prefix, local, azure_ad)
    cr = Curation(task_runner="dask" if dask or dask_address else None, dask_address=dask_address)
    try:
        dataset_id = cr.curate_dataset(name, config, resume=resume)
        console.print(f"dataset id: [bold]{dataset_id}[/]")
        if wait:
            _track_with_progress(cr, dataset_id)
            _summary(cr, dataset_id)
    except KNOWN_ERRORS as exc:
        _fail(exc)


@app.command("curate-new")
def curate_new(
    container: Annotated[str | None, typer.Option(help="Azure container name")] = None,
    account_name: Annotated[str | None, typer.Option(help="Azure storage account")] = None,
    account_url: Annotated[str | None, typer.Option(help="Blob endpoint, e.g. for Azurite")] = None,
    prefix: Annotated[str | None, typer.Option(help="Only blobs under this prefix")] = None,
    local: Annotated[Path | None, typer.Option(help="A local folder instead of a container")] = None,
    azure_ad: AzureAdOption = False,
    name: Annotated[str | None, typer.Option(help="Dataset name if this run creates it")] = None,
) -> None:
    """Curate only the blobs added or changed since the last run, as a new version of that storage's dataset."""
    config = _storage_config(container, account_name, account_url, prefix, local, azure_ad)
    try:
        summary = Curation().curate_new_blobs(config, name=name)
    except KNOWN_ERRORS as exc:
        _fail(exc)
    if summary["version"] is None:
        console.print(f"dataset {summary['dataset_id']}: nothing new", highlight=False)
    else:
        console.print(
            f"dataset {summary['dataset_id']} version {summary['version']}: {summary['added']} added, "
            f"{summary['changed']} changed, {summary['failed']} failed; {summary['images']} images",
            highlight=False,
        )


@app.command()
def track(dataset_id: str, tracing: Annotated[bool, typer.Option(help="Poll until the end")] = True) -> None:
    """Track a dataset's inference job and write its results when it completes."""
    cr = Curation()
    try:
        status = _track_with_progress(cr, dataset_id) if tracing else cr.tracing_curation_task(dataset_id, tracing=False)
        console.print(status)
    except KNOWN_ERRORS as exc:
        _fail(exc)


@app.command("list")
def list_datasets(type: Annotated[DatasetType | None, typer.Option(help="demo or user")] = None) -> None:
    """List datasets, newest first."""
    table = Table("name", "status", "type", "images", "created")
    table.add_column("id", no_wrap=True, min_width=24)
    for r in Curation().list_datasets(type):
        table.add_row(r.name, r.status.value, r.type.value, str(r.counts.accepted), r.created.strftime("%Y-%m-%d %H:%M"), r.id)
    console.print(table)


@app.command()
def stale(
    older_than_hours: Annotated[float, typer.Option(help="Hours without progress")] = 6.0,
    mark_failed: Annotated[bool, typer.Option(help="Mark them Failed")] = False,
) -> None:
    """List datasets stuck in Processing (a killed run, a lost job); --mark-failed marks them Failed."""
    found = Curation().stale_datasets(older_than_hours, mark_failed)
    for r in found:
        console.print(f"{r.id} {r.name!r} {r.status.value} (last update {r.updated:%Y-%m-%d %H:%M} UTC)", highlight=False)
    console.print(f"{len(found)} stale dataset(s)")


@app.command()
def delete(dataset_id: str, yes: Annotated[bool, typer.Option("--yes", help="Do not ask")] = False) -> None:
    """Delete a dataset and its results (the demo dataset and a Processing one are refused)."""
    try:
        cr = Curation()
        record = cr.catalog.dataset(dataset_id).deletable()  # refused before asking
        if not yes and not typer.confirm(f"Delete dataset {record.id} ({record.name!r}) and all its results?"):
            raise typer.Exit(code=1)
        cr.delete_dataset(dataset_id)
        console.print(f"deleted {dataset_id}")
    except KNOWN_ERRORS as exc:
        _fail(exc)


@app.command()
def export(dataset_id: str, output: Annotated[Path, typer.Option("-o", "--output", help="JSON file")]) -> None:
    """Export a dataset's inference results as JSON."""
    try:
        data = Curation().export_dataset(dataset_id, output)
        console.print(f"wrote {len(data['images'])} images to {output}")
    except KNOWN_ERRORS as exc:
        _fail(exc)


@app.command()
def publish(
    dataset_id: str,
    url: Annotated[str | None, typer.Argument(help="fsspec URL or path; default CURATION_OUTPUT_URL")] = None,
) -> None:
    """Publish a Completed dataset's Parquet and record to URL/DATASET_ID/ (abfs://container/prefix, file:///dir)."""
    from curation.dataset.publish import PublishError

    try:
        published = Curation().publish_dataset(dataset_id, url)
    except (*KNOWN_ERRORS, PublishError) as exc:
        _fail(exc)
    console.print(f"published to {published.url}: {', '.join(published.files)}", highlight=False, soft_wrap=True)


@app.command()
def demo(fresh: Annotated[bool, typer.Option(help="Curate again even if a demo dataset exists")] = False) -> None:
    """Generate the synthetic demo images and curate them as the demo dataset."""
    cr = Curation()
    try:
        started = time.perf_counter()
        folder = cr.generate_demo_images()
        generated = time.perf_counter()
        dataset_id = cr.demo(fresh=fresh)
        finished = time.perf_counter()
    except KNOWN_ERRORS as exc:
        _fail(exc)
    _summary(cr, dataset_id, folder / "labels.csv")
    images = cr.get_dataset(dataset_id).counts.accepted
    seconds = finished - generated
    console.print(
        f"generated {images} demo images in {generated - started:.1f} s; curated them in {seconds:.1f} s "
        f"({images / seconds:.1f} images/s, including Prefect's start-up)",
        highlight=False,
    )
    console.print("open the viewer: panel serve dashboards/  (or: curation viewer)")


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8080,
) -> None:
    """Run the inference service (keys from CURATION_SERVICE_API_KEYS)."""
    import uvicorn

    from curation.inference.models.backends import load_backend
    from curation.inference.service.app import create_app
    from curation.settings import get_settings

    settings = get_settings()
    try:
        api = create_app(settings, load_backend(settings.model, settings))
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        _fail(exc)
    uvicorn.run(api, host=host, port=port)


@app.command()
def sample(
    dataset_id: str,
    fraction: Annotated[float, typer.Option(help="Share to keep: 0.2, 0.4, 0.6, 0.8 or 1.0")] = 0.2,
    seed: Annotated[int | None, typer.Option(help="Recompute the order with this seed")] = None,
    strategy: Annotated[str | None, typer.Option(help="Recompute with stratified or random")] = None,
    save: Annotated[bool, typer.Option(help="Save the sample as a new dataset")] = False,
    name: Annotated[str | None, typer.Option(help="Name of the saved dataset")] = None,
    images: Annotated[Path | None, typer.Option(
        help="Keep only the images listed in this text file (image ids or blob names, one per line)")] = None,
    tag_filter: Annotated[list[str] | None, typer.Option(
        "--filter", help="Keep only these tags: CATEGORY=CLASS[,CLASS...], e.g. weather=rainy,None; repeatable "
        "(classes OR-ed, categories AND-ed)")] = None,
) -> None:
    """Show a sample of a dataset and its fidelity against random sampling; --save registers it as a dataset.

    With --filter, only images with those tags (as the viewer's filters); with --images, only the listed images (at
    --fraction 1.0, exactly them: a selection made elsewhere). --save registers what is kept as a dataset."""
    from curation.dataset.catalog import Document
    from curation.sampling.fidelity import format_fidelity

    if not 0 < fraction <= 1:
        _fail(ValueError(f"--fraction must be in (0, 1], got {fraction}"))
    try:
        filters = parse_filters(tag_filter or [])
    except ValueError as exc:
        _fail(exc)
    listed = None
    if images is not None:
        try:
            listed = images.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            _fail(ValueError(f"--images {images}: cannot read it ({type(exc).__name__})"))
    cr = Curation()
    try:
        stored = cr.catalog.dataset(dataset_id).read_json(Document.SAMPLING_REPORT)
        if seed is not None or strategy is not None or stored is None:
            report = cr.sample_dataset(dataset_id, seed=seed or 0, strategy=strategy or "stratified")
        else:
            report = stored
        ids = cr.sample_ids(dataset_id, fraction, filters=filters or None, images=listed)
        console.print(format_fidelity(report), highlight=False, markup=False, soft_wrap=True)
        among = "" if listed is None else " of the listed images"
        among += f" ({describe_filters(filters)})" if filters else ""
        console.print(f"sample at {fraction:.0%}{among}: {len(ids)} of {report['images']} images", highlight=False)
        if save and not ids:
            _fail(ValueError("the selection is empty: nothing to save"))
        if save:
            source = cr.get_dataset(dataset_id)
            default = f"{source.name} ({fraction:.0%} sample{', listed images' if listed is not None else ''})"
            new_id = cr.save_subset(dataset_id, name or default, fraction, filters=filters or None, images=listed)
            console.print(f"saved as dataset [bold]{new_id}[/]")
    except KNOWN_ERRORS as exc:
        _fail(exc)


@app.command()
def teach(
    dataset_id: str,
    labels: Annotated[Path, typer.Argument(help="CSV: file (blob name or image id) plus time/weather/road/location")],
) -> None:
    """Fit a linear probe per category on a few labelled images and re-tag the whole dataset from its embeddings."""
    try:
        summary = Curation().teach(dataset_id, labels)
    except (*KNOWN_ERRORS, FileNotFoundError) as exc:
        _fail(exc)
    table = Table("category", "classes", "labelled", "training accuracy")
    for category, info in summary["categories"].items():
        labelled = ", ".join(f"{class_label(k)} {v}" for k, v in info["labelled"].items())
        table.add_row(category, ", ".join(map(class_label, info["classes"])), labelled, f"{info['train_accuracy']:.2f}")
    console.print(table)
    for category, reason in summary.get("skipped", {}).items():
        console.print(f"skipped {category}: {reason}", highlight=False)
    console.print(f"dataset {dataset_id} re-tagged as {summary['meta_model']}", highlight=False)


@app.command()
def evaluate(
    images_dir: Path,
    labels: Annotated[Path, typer.Option(help="CSV with columns file,time,weather,road,location")],
    backend: Annotated[str, typer.Option(help="Model backend: cnn, fast or clip")] = "cnn",
    fewshot: Annotated[int | None, typer.Option(help="Train a probe on K labelled images per class")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the report as JSON")] = None,
) -> None:
    """Measure a backend's tags against labelled photographs: accuracy, macro-F1, confusion, coverage."""

    from curation.inference.models.evaluate import evaluate_folder, format_report
    from curation.inference.models.backends import load_backend

    for path in (images_dir, labels):
        if not path.exists():
            _fail(ValueError(f"no such file or folder: {path}"))
    try:
        report = evaluate_folder(images_dir, labels, load_backend(backend), fewshot=fewshot)
    except (*KNOWN_ERRORS, FileNotFoundError) as exc:
        _fail(exc)
    console.print(format_report(report), highlight=False, markup=False)
    target = output or Path(f"evaluation-{backend}.json")
    target.write_text(json.dumps(report, indent=2, default=str))
    console.print(f"wrote {target}")


@app.command()
def viewer(
    port: Annotated[int, typer.Option(help="Local port")] = 5006,
    show: Annotated[bool, typer.Option(help="Open a browser tab")] = True,
) -> None:
    """Open the curation viewer (`panel serve dashboards/`) on this machine."""
    from curation.viewer.serve import launch_viewer

    try:
        raise typer.Exit(code=launch_viewer(port=port, show=show))
    except FileNotFoundError as exc:
        _fail(exc)


def main() -> None:
    """Entry point: an unexpected error is one line (--debug or CURATION_DEBUG=1 for the traceback); a watchdog ends
    whatever the command started if this process is killed."""
    # Prefect's temporary server phones home for telemetry; offline that is an ERROR line on every run.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    start_watchdog()
    try:
        app()
    except Exception as exc:  # known errors exit in the commands; this is the safety net
        if _debug or os.environ.get("CURATION_DEBUG"):
            raise
        from curation.secrets import redact

        err.print(f"[bold red]error:[/] unexpected {type(exc).__name__}: {redact(str(exc))}", highlight=False)
        err.print("run with --debug (or CURATION_DEBUG=1) to see the traceback", highlight=False)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
