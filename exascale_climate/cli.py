"""`exaclimate`: the command line. Each command only parses its options and calls the library.

Heavy imports (TensorFlow, Horovod, xarray) happen inside the commands so `--help` stays fast.
"""
from __future__ import annotations

import json
import sys
import traceback

import click

from exascale_climate import __version__
from exascale_climate.errors import ExaclimateError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class ExaclimateGroup(click.Group):
    """Turns user errors into a one-line message and exit code 2 (the traceback only with -v)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ExaclimateError as e:
            if (ctx.obj or {}).get("verbosity", 0) > 0:
                traceback.print_exc()
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


def config_options(func):
    """--config FILE and repeated --set KEY=VALUE, shared by every command that takes a config."""
    func = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a config key, e.g. --set train.batch_size=4 (repeatable).")(func)
    func = click.option("--config", "config_path", metavar="FILE",
                        help="YAML config file or bundled name (tiramisu, deeplabv3plus, demo).")(func)
    return func


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
    setup_logging(verbosity)


# ----------------------------------------------------------------------------------------- info
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(as_json):
    """Versions, Horovod's build (controllers, frameworks), cores and thread settings."""
    from exascale_climate.utils.sysinfo import collect_info, format_info

    data = collect_info()
    click.echo(json.dumps(data, indent=2) if as_json else format_info(data))


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


# ---------------------------------------------------------------------------------------- model
@main.group(cls=ExaclimateGroup)
def model():
    """Inspect the segmentation networks."""


# ---------------------------------------------------------------------------------------- bench
@main.group(cls=ExaclimateGroup)
def bench():
    """Benchmarks; each writes JSON lines (see docs/PERFORMANCE.md)."""


# ----------------------------------------------------------------------------------------- jobs
@main.group(cls=ExaclimateGroup)
def jobs():
    """Batch jobs on SLURM and LSF."""


if __name__ == "__main__":
    main()
