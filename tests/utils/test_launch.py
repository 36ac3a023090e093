"""The Horovod build works: real 2-rank allreduce and broadcast under Gloo, horovodrun --mpi and mpirun."""
import json

import pytest

from exascale_climate.utils.launch import python_module, run_ranks


@pytest.mark.multirank
@pytest.mark.parametrize("controller", ["gloo", "mpi", "mpirun"])
def test_two_rank_allreduce_and_broadcast(controller, tmp_path):
    result = run_ranks(2, python_module("exascale_climate.utils.hvd_selfcheck", str(tmp_path)), controller=controller,
                       timeout=180)
    assert result.returncode == 0, result.stdout
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank-*.json"))]
    assert sorted(r["rank"] for r in records) == [0, 1]
    for r in records:
        assert r["size"] == 2
        assert r["allreduce_average"] == [0.5, 15.0]
        assert r["allreduce_sum"] == [1.0, 30.0]
        assert r["broadcast"] == [42.0]
        assert r["controller"] == ("gloo" if controller == "gloo" else "mpi")
