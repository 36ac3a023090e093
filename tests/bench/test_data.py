"""`exaclimate bench data` produces one record per stage, each with a same-run raw-I/O baseline."""
from exascale_climate.bench.data import bench_data


def test_bench_data_records(tmp_path):
    records = bench_data((48, 72), samples=2, workdir=tmp_path)
    metrics = [r["metric"] for r in records]
    assert any(m.startswith("synth") for m in metrics) and any(m.startswith("label") for m in metrics)
    assert any(m.startswith("convert (") for m in metrics)
    for r in records:
        assert r["value"] > 0 and r["baseline"] > 0 and r["ratio"] > 0
        assert r["grid"] == "48x72" and r["machine"]["cpus"]
    assert not list(tmp_path.glob("raw-*.bin"))  # baseline scratch files are cleaned up
