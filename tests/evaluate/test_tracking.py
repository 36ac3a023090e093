"""Tracking on synthetic storms with known answers: the date line, a one-step gap, two storms passing close,
AR overlap, and the CLI end to end on files (outputs read back with netCDF4 / csv, not with the tracker)."""
import csv
import math
from pathlib import Path
import subprocess
import sys

import netCDF4
import numpy as np
import pytest

from exascale_climate.config import TrackConfig
from exascale_climate.data.writers import write_netcdf_sample
from exascale_climate.data.grid import default_coordinates
from exascale_climate.evaluate.tracking import Detection, link_cyclones, link_rivers

T0 = np.datetime64("2000-09-01T00:00:00", "s")
H6 = np.timedelta64(6, "h")
R = 6371.22


def hand_distance(lat1, lon1, lat2, lon2):
    """Spherical law of cosines (a different formula from the code's haversine)."""
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    c = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return R * math.acos(min(1.0, max(-1.0, c)))


def storm(positions, start=0, psl=None):
    return [Detection(T0 + (start + k) * H6, lat, lon, 1e5, (psl[k] if psl else float("nan")))
            for k, (lat, lon) in enumerate(positions)]


def cfg(**kw):
    base = dict(tc_max_speed_km_h=150.0, tc_max_gap_steps=1, tc_min_lifetime_hours=0.0)
    base.update(kw)
    return TrackConfig(**base)


def test_storm_crossing_the_date_line_is_one_track_with_the_right_path():
    positions = [(15.0, 350.0), (15.5, 355.0), (16.0, 0.0), (16.5, 5.0), (17.0, 10.0)]
    tracks = link_cyclones(storm(positions, psl=[1000e2, 990e2, 980e2, 985e2, 995e2]), cfg())
    assert len(tracks) == 1
    t = tracks[0]
    assert [(p.lat, p.lon) for p in t.points] == positions
    assert t.lifetime_hours == 24.0
    assert t.min_psl_pa == 980e2
    legs = sum(hand_distance(*a, *b) for a, b in zip(positions[:-1], positions[1:]))
    assert t.path_km == pytest.approx(legs, rel=1e-9)
    assert legs < 3000  # the short way across 0 E, not 340 degrees round the globe


def test_one_missing_step_is_bridged_only_when_gaps_are_allowed():
    # storm A misses step 2; storm B (far away) is seen at every step, so the time step is known to be 6 h
    a = storm([(12.0, 140.0), (12.5, 138.0)]) + storm([(13.5, 134.0), (14.0, 132.0)], start=3)
    b = storm([(-15.0, 60.0 + k) for k in range(5)])
    one = link_cyclones(a + b, cfg(tc_max_gap_steps=1))
    assert sorted(len(t.points) for t in one) == [4, 5]
    gap_track = next(t for t in one if len(t.points) == 4)
    assert gap_track.lifetime_hours == 24.0
    assert [p.lon for p in gap_track.points] == [140.0, 138.0, 134.0, 132.0]
    none = link_cyclones(a + b, cfg(tc_max_gap_steps=0))
    assert sorted(len(t.points) for t in none) == [2, 2, 5]
    # and a 12 h minimum lifetime then drops both 6 h halves
    assert [len(t.points) for t in link_cyclones(a + b, cfg(tc_max_gap_steps=0, tc_min_lifetime_hours=12))] == [5]


def test_two_storms_passing_close_keep_their_identities():
    # A moves east along 15N, B west along 16N (111 km apart), 1.6 degrees (~170 km) per 6 h step;
    # they pass each other between steps 2 and 3.
    step = 1.6
    a_pos = [(15.0, 150.0 + step * k) for k in range(6)]
    b_pos = [(16.0, 150.0 + step * 5.5 - step * k) for k in range(6)]
    # the trap: at the crossing, A's last point is nearer to B's next point than to its own next point,
    # so nearest-neighbour linking (StitchNodes' rule) would swap them
    assert hand_distance(*a_pos[2], *b_pos[3]) < hand_distance(*a_pos[2], *a_pos[3])
    tracks = link_cyclones(storm(a_pos) + storm(b_pos), cfg(tc_max_speed_km_h=60.0))
    assert len(tracks) == 2
    lats = sorted({p.lat for p in t.points} for t in tracks)
    assert [sorted(s) for s in lats] == [[15.0], [16.0]]
    assert all(len(t.points) == 6 for t in tracks)


def test_a_jump_beyond_the_range_starts_a_new_track():
    far = storm([(20.0, 100.0), (20.0, 101.0), (20.0, 115.0)])  # 14 degrees (~1460 km) in 6 h: > 150 km/h * 6 h
    tracks = link_cyclones(far, cfg())
    assert sorted(len(t.points) for t in tracks) == [1, 2]


def test_rivers_link_by_overlap_not_by_distance():
    area = np.ones((10, 10))
    band = lambda rows, cols: np.ravel_multi_index(np.meshgrid(rows, cols, indexing="ij"), (10, 10)).ravel()  # noqa
    first = Detection(T0, 40.0, 200.0, 20.0, cells=np.sort(band([2, 3], range(0, 10))))
    moved = Detection(T0 + H6, 41.0, 200.0, 20.0, cells=np.sort(band([3, 4], range(0, 10))))  # shares 10 cells
    other = Detection(T0 + H6, 40.5, 200.0, 10.0, cells=np.sort(band([8], range(0, 10))))  # touches nothing
    tracks = link_rivers([first, moved, other], area, TrackConfig(ar_min_overlap=0.3))
    assert sorted(len(t.points) for t in tracks) == [1, 2]
    # 10 shared cells are 0.5 of the smaller object: a 0.6 threshold separates them
    assert sorted(len(t.points) for t in link_rivers([first, moved, other], area,
                                                      TrackConfig(ar_min_overlap=0.6))) == [1, 1, 1]


# ---------------------------------------------------------------------------------------------- files + CLI
GRID = (96, 144)


def disc_labels(lat, lon, centre, radius_km, cls=1):
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    p1, p2 = np.radians(centre[0]), np.radians(lat2)
    c = np.sin(p1) * np.sin(p2) + np.cos(p1) * np.cos(p2) * np.cos(np.radians(lon2 - centre[1]))
    return np.where(R * np.arccos(np.clip(c, -1, 1)) <= radius_km, cls, 0).astype(np.uint8)


def write_steps(directory, centres, psl_min, skip=()):
    """Labelled ClimateNet files, 6-hourly: a TC disc at each centre (PSL minimum psl_min[k] at its middle)."""
    lat, lon = default_coordinates(*GRID)
    paths = []
    for k, centre in enumerate(centres):
        labels = np.zeros(GRID, np.uint8) if k in skip else disc_labels(lat, lon, centre, 400.0)
        psl = np.full(GRID, 101300.0, np.float32)
        r, c = np.abs(lat - centre[0]).argmin(), np.abs(lon - centre[1] % 360).argmin()
        psl[r, c] = psl_min[k]
        wind = np.zeros(GRID, np.float32)
        wind[labels == 1] = 20.0 + k
        data = np.stack([psl, wind, np.zeros(GRID, np.float32)], -1)
        paths.append(write_netcdf_sample(directory / f"step-{k:02d}.nc", data, labels, ["PSL", "UBOT", "VBOT"],
                                         lat=lat, lon=lon, time_hours=6.0 * k,
                                         time_units="hours since 2001-08-20 00:00:00", calendar="standard"))
    return paths


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "exascale_climate.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_track_cli_writes_cf_trajectories_csv_and_map(tmp_path):
    centres = [(14.0, 352.0 + 4.0 * k) for k in range(6)]  # crosses 0 E on the 0..357.5 grid
    psl = [100000.0, 99000.0, 97000.0, 96500.0, 98000.0, 99500.0]
    write_steps(tmp_path / "in", centres, psl, skip=(3,))  # one step without the storm: a gap
    proc = run_cli("track", tmp_path / "in", "--out", tmp_path / "out", "--set", "track.tc_min_lifetime_hours=24")
    assert proc.returncode == 0, proc.stderr
    assert "1 TC" in proc.stdout
    with netCDF4.Dataset(tmp_path / "out" / "tracks.nc") as nc:
        assert nc.featureType == "trajectory" and nc.Conventions == "CF-1.8"
        assert nc["trajectory"].cf_role == "trajectory_id"
        assert nc["rowSize"].sample_dimension == "obs"
        assert list(nc["rowSize"][:]) == [5]
        assert float(nc["lifetime"][0]) == 30.0
        assert float(nc["track_min_psl"][0]) == 97000.0  # step 3 (96500) was not detected
        assert float(nc["track_max_wind"][0]) == 25.0
        times = netCDF4.num2date(nc["time"][:], nc["time"].units)
        assert [t.hour for t in times] == [0, 6, 12, 0, 6]
        lon = np.asarray(nc["lon"][:])
        seen = [centres[i] for i in (0, 1, 2, 4, 5)]
        dist = [hand_distance(la, lo, *c) for la, lo, c in zip(nc["lat"][:], lon, seen)]
        assert max(dist) < 150.0  # centroids of the discs sit on the storm centres (grid of ~200 km)
    rows = list(csv.DictReader(open(tmp_path / "out" / "tracks.csv")))
    assert [r["time"] for r in rows] == ["2001-08-20T00:00:00", "2001-08-20T06:00:00", "2001-08-20T12:00:00",
                                         "2001-08-21T00:00:00", "2001-08-21T06:00:00"]
    summary = list(csv.DictReader(open(tmp_path / "out" / "tracks_summary.csv")))
    assert summary[0]["lifetime_hours"] == "30" and summary[0]["points"] == "5"
    png = (tmp_path / "out" / "tracks.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_track_cli_names_a_file_without_labels(tmp_path):
    lat, lon = default_coordinates(*GRID)
    psl = np.full(GRID + (1,), 101000.0, np.float32)  # plausible Pa: implausible values are refused on read
    write_netcdf_sample(tmp_path / "bare.nc", psl, None, ["PSL"], lat=lat, lon=lon, time_hours=0.0)
    proc = run_cli("track", tmp_path / "bare.nc", "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert "bare.nc" in proc.stderr and "LABELS" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_track_reads_predict_masks_with_intensity_from_their_input_files(tmp_path):
    """`predict` output (mask files) as input: the masks give the objects, the input files the PSL and wind."""
    from exascale_climate.evaluate.predict import write_mask_netcdf
    from exascale_climate.evaluate.tracking import read_frames, track

    centres = [(-15.0, 70.0 - 3.0 * k) for k in range(5)]
    psl = [99000.0, 98000.0, 97500.0, 98500.0, 99500.0]
    inputs = write_steps(tmp_path / "in", centres, psl)
    lat, lon = default_coordinates(*GRID)
    import xarray as xr

    for k, src in enumerate(inputs):
        coords = {"lat": xr.Variable(("lat",), lat, {"units": "degrees_north"}),
                  "lon": xr.Variable(("lon",), lon, {"units": "degrees_east"}),
                  "time": xr.Variable(("time",), [6.0 * k], {"units": "hours since 2001-08-20 00:00:00",
                                                             "calendar": "standard"})}
        mask = disc_labels(lat, lon, centres[k], 400.0)[None].astype(np.int8)
        write_mask_netcdf(tmp_path / "pred" / f"step-{k:02d}.mask.nc", mask, coords, attrs={"input_file": str(src)})
    frames = read_frames(tmp_path / "pred" / "step-02.mask.nc")
    assert len(frames) == 1 and frames[0].psl is not None and float(frames[0].psl.min()) == 97500.0
    result = track([tmp_path / "pred"], tmp_path / "out", TrackConfig(tc_min_lifetime_hours=24), plot=False)
    assert result["tropical_cyclone"] == 1
    summary = list(csv.DictReader(open(tmp_path / "out" / "tracks_summary.csv")))
    assert float(summary[0]["min_psl_pa"]) == 97500.0 and float(summary[0]["max_wind_ms"]) == 24.0
    assert summary[0]["start"] == "2001-08-20T00:00:00" and summary[0]["lifetime_hours"] == "24"


def test_relinking_real_era5_tc_points_recovers_the_original_tracks(tmp_path):
    """Real detections: the 6-hourly TC points a tracker found in ERA5 for 1996 (huracanpy's example file), their
    track ids removed and rows shuffled, written as an event table; `track` must link them back into the original
    tracks (the original allows gaps of up to 3 steps)."""
    import random

    import huracanpy

    from exascale_climate.evaluate.tracking import track

    src = Path(huracanpy.__file__).parent / "_data" / "example_data" / "ERA5_1996_UZ.csv"
    rows = list(csv.DictReader(open(src)))
    key = lambda r: (r["time"].replace(" ", "T"), round(float(r["lat"]), 3), round(float(r["lon"]) % 360, 3))  # noqa
    original = {}
    for r in rows:
        original.setdefault(r["track_id"], []).append(key(r))
    true_links = {(a, b) for pts in original.values() for a, b in zip(pts[:-1], pts[1:])}
    random.Random(0).shuffle(rows)
    with open(tmp_path / "events.csv", "w") as f:
        f.write("time,event_class,object_id,centroid_lat,centroid_lon,area_km2,pixels,min_psl_pa,max_wind_ms,source\n")
        f.writelines(f"{r['time']},tropical_cyclone,0,{r['lat']},{r['lon']},,,{r['slp']},{r['wind10']},era5\n"
                     for r in rows)
    track([tmp_path / "events.csv"], tmp_path / "out",
          TrackConfig(tc_max_speed_km_h=150, tc_max_gap_steps=3, tc_min_lifetime_hours=0), plot=False)
    ours = {}
    for r in csv.DictReader(open(tmp_path / "out" / "tracks.csv")):
        ours.setdefault(r["track_id"], []).append(key({"time": r["time"], "lat": r["lat"], "lon": r["lon"]}))
    links = {(a, b) for pts in ours.values() for a, b in zip(pts[:-1], pts[1:])}
    assert sum(len(p) for p in ours.values()) == len(rows)
    recall, precision = len(links & true_links) / len(true_links), len(links & true_links) / len(links)
    assert recall > 0.99 and precision > 0.99, (recall, precision, len(ours), len(original))
