"""Reading #SBATCH / #BSUB directives back, and the LSF checks that stand in for a real bsub."""
import pytest

from exascale_climate.errors import ConfigError
from exascale_climate.jobs.directives import parse_directives, validate_lsf

LSF_OK = """#!/bin/bash
# a comment
#BSUB -J "my job"
#BSUB -nnodes 2
#BSUB -W 01:30
#BSUB -o "/tmp/a b/%J.out"
#BSUB -alloc_flags "nvme smt4"

echo hi
"""


def test_directives_are_split_like_a_command_line():
    found = parse_directives('#!/bin/bash\n#SBATCH --job-name="a \\"b\\" # c"  # comment\n#SBATCH -N 2\n',
                             "#SBATCH")
    assert [(d.option, d.value) for d in found] == [("--job-name", 'a "b" # c'), ("-N", "2")]
    assert found[0].line == 2


def test_a_directive_after_the_first_command_is_an_error():
    with pytest.raises(ConfigError, match=r"job.lsf:4: #BSUB after the first command"):
        parse_directives("#!/bin/bash\n#BSUB -J a\necho hi\n#BSUB -W 10\n", "#BSUB", "job.lsf")


def test_valid_lsf_script():
    assert validate_lsf(LSF_OK) == {"-J": "my job", "-nnodes": "2", "-W": "01:30", "-o": "/tmp/a b/%J.out",
                                    "-alloc_flags": "nvme smt4"}


@pytest.mark.parametrize("change,message", [
    (("#BSUB -W 01:30", "#BSUB -W 1h"), "-W '1h' is not a valid value"),
    (("#BSUB -nnodes 2", "#BSUB -nnodes 0"), "-nnodes '0'"),
    (("#BSUB -nnodes 2", "#BSUB -nnodes 2\n#BSUB -n 12"), "exactly one of"),
    (("#BSUB -nnodes 2", "#BSUB -W 10"), "given twice"),
    (("#BSUB -J \"my job\"", "#BSUB -Z x"), "unknown #BSUB option -Z"),
    (("#BSUB -J \"my job\"", "#BSUB -J my job"), "takes one value"),
    (("#BSUB -o \"/tmp/a b/%J.out\"\n", ""), "-o is missing"),
    (("#BSUB -J \"my job\"", "#BSUB -J \"unterminated"), "cannot parse"),
])
def test_invalid_lsf_scripts_name_the_problem(change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        validate_lsf(LSF_OK.replace(*change))
