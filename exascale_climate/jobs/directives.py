"""Read scheduler directives (`#SBATCH`, `#BSUB`) back from a script, and check LSF ones.

Why a parser: no open-source LSF exists to ask (`bsub` has no dry run we could run here), so an LSF script is
checked by reading its directives the way LSF does -- the lines before the first command, split like a shell
command line -- and checking each option and value. SLURM scripts are checked by `sbatch --test-only`.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from exascale_climate.errors import ConfigError


@dataclass(frozen=True)
class Directive:
    line: int  # 1-based line number in the script
    option: str
    value: str | None


def parse_directives(text: str, prefix: str, source: str = "script") -> list[Directive]:
    """The `prefix` directives of a script; they must precede the first command (schedulers ignore later
    ones, which is never what the author meant)."""
    directives: list[Directive] = []
    in_header = True
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if number == 1 and stripped.startswith("#!"):
            continue
        if stripped.startswith(prefix):
            if not in_header:
                raise ConfigError(f"{source}:{number}: {prefix} after the first command is ignored by the scheduler")
            body = stripped[len(prefix):]
            try:
                words = shlex.split(body, comments=True)
            except ValueError as e:
                raise ConfigError(f"{source}:{number}: cannot parse {stripped!r} ({e})") from None
            if not words:
                raise ConfigError(f"{source}:{number}: empty {prefix} directive")
            option, *rest = words
            if "=" in option and option.startswith("--"):
                option, value = option.split("=", 1)
                rest = [value, *rest]
            if len(rest) > 1:
                raise ConfigError(f"{source}:{number}: {option} takes one value, got {rest!r} (quote it)")
            directives.append(Directive(number, option, rest[0] if rest else None))
        elif stripped and not stripped.startswith("#"):
            in_header = False
    return directives


# LSF options the templates may use: name -> pattern of the value (None = a flag without a value).
_ANY = r".+"
LSF_OPTIONS: dict[str, str | None] = {
    "-J": r"[^\s].*",
    "-n": r"[1-9]\d*",
    "-nnodes": r"[1-9]\d*",
    "-W": r"(\d+:)?\d+",
    "-wa": r"[A-Z0-9]+",  # the warning action: a signal name (USR1) before the limit
    "-wt": r"(\d+:)?\d+",  # ... this long before it, [hours:]minutes
    "-P": _ANY,
    "-G": _ANY,
    "-q": _ANY,
    "-o": _ANY,
    "-e": _ANY,
    "-cwd": _ANY,
    "-outdir": _ANY,
    "-R": _ANY,
    "-alloc_flags": _ANY,
    "-gpu": _ANY,
    "-M": r"\d+[KMGT]?B?",
    "-app": _ANY,
    "-w": _ANY,
    "-B": None,
    "-N": None,
    "-x": None,
}


def validate_lsf(text: str, source: str = "script") -> dict[str, str | None]:
    """Check an LSF script's `#BSUB` directives; returns {option: value}. Raises ConfigError naming the line."""
    found: dict[str, str | None] = {}
    for d in parse_directives(text, "#BSUB", source):
        if d.option not in LSF_OPTIONS:
            raise ConfigError(f"{source}:{d.line}: unknown #BSUB option {d.option}")
        pattern = LSF_OPTIONS[d.option]
        if pattern is None and d.value is not None:
            raise ConfigError(f"{source}:{d.line}: #BSUB {d.option} takes no value")
        if pattern is not None and (d.value is None or not re.fullmatch(pattern, d.value)):
            raise ConfigError(f"{source}:{d.line}: #BSUB {d.option} {d.value!r} is not a valid value")
        if d.option in found:
            raise ConfigError(f"{source}:{d.line}: #BSUB {d.option} given twice")
        found[d.option] = d.value
    if ("-n" in found) == ("-nnodes" in found):
        raise ConfigError(f"{source}: give exactly one of #BSUB -n (slots) or -nnodes (whole nodes)")
    for required in ("-W", "-o"):
        if required not in found:
            raise ConfigError(f"{source}: #BSUB {required} is missing")
    return found
