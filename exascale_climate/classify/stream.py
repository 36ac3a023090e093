"""`exaclimate patches extract --synthetic STEPS`: patches straight from the generator, no field ever written.

The study's counts (TC 10,000 / 10,000 ...) need thousands of 768 x 1152 time steps; writing them as netCDF
first costs ~60 MB a step and a second read. Here each step is generated in memory, labelled once (the TC and
AR masks of `data.labeller.label_fields`, the front mask of `data.fronts`), its patches for every pattern still
short of its count are cropped, and the fields are dropped. Steps are consumed in time order, so a pattern is
finished at the first step N whose first round(train_fraction x N) steps hold its training counts and whose
other steps hold its test counts (positives and negatives each); those give the training and the test patches (split by time, as `patches.extract`). Candidates go
to a temporary HDF5 file next to the output (AR patches are 265 kB each), the final file is then the same
format as `patches.extract` writes, `source` indexing the step stamps in the dataset `/sources`.

SIGTERM or Ctrl-C stops the generation and writes every unfinished pattern from the steps taken so far
(split the same way, attribute `stopped_early`), so a run cut short by a deadline still leaves its patches.

Negatives per step are fixed after a pilot of the first steps (the positive rate sets how many a step must
give), drawn among that step's event-free windows with a per-step seed, so the result does not depend on
the number of workers.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from exascale_climate.classify.patches import (FORMAT, NEG_TRIES_PER_FILE, Candidates, candidates,
                                               window_index)
from exascale_climate.classify.study import LANDMASK, PATTERNS, Pattern
from exascale_climate.config import LabellerConfig, SynthConfig
from exascale_climate.errors import ConfigError
from exascale_climate.utils.log import get_logger

log = get_logger("classify.stream")
PILOT_STEPS = 8
BLOCK = 8  # contiguous steps per task: a worker reuses the noise keyframes of its block

_STATE: dict = {}  # per worker process: the generator and the shared "pattern finished" flags


class _Step:
    """What `patches.candidates` reads of a sample: a name and the PSL plane."""

    def __init__(self, path: str, fields: dict[str, np.ndarray]):
        self.path = path
        self.variables = ["PSL"]
        self.data = fields["PSL"][..., None]


def _init_worker(cfg: SynthConfig, catalogue, flags) -> None:
    import signal

    from exascale_climate.data.synthetic import Generator

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops and writes what there is
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's stop handler: Pool.terminate must kill us
    _STATE["gen"] = Generator(cfg, catalogue)
    _STATE["flags"] = flags


def _masks(active: list[str], fields, grid, labeller_cfg: LabellerConfig) -> dict[str, np.ndarray]:
    """The class pixels of each active pattern: one labelling serves TC and AR (TC wins overlaps, as in
    the segmentation labels), the front detector serves WF."""
    from exascale_climate.data.labeller import AR_CLASS, TC_CLASS, label_fields

    out = {}
    if "tc" in active or "ar" in active:
        labels = label_fields(fields, grid.lat, grid.lon, labeller_cfg)
        out["tc"], out["ar"] = labels == TC_CLASS, labels == AR_CLASS
    if "wf" in active:
        from exascale_climate.data.fronts import front_mask

        out["wf"] = front_mask(fields, grid, labeller_cfg)[0]
    return {k: out[k] for k in active}


def step_patches(gen, index: int, patterns: dict[str, Pattern], neg_per_step: dict[str, int], seed: int,
                 labeller_cfg: LabellerConfig) -> dict[str, dict[str, np.ndarray]]:
    """Generate step `index`, crop every positive and `neg_per_step` negatives per pattern, drop the fields.

    Returns {pattern: {data (n, h, w, C) float32, mask (n, h, w) uint8, label, row, col}}.
    """
    from exascale_climate.data.synthetic import sample_name

    fields = gen.fields(index)
    grid = gen.grid
    masks = _masks(list(patterns), fields, grid, labeller_cfg)
    step = _Step(sample_name(index, gen.cfg.hours_per_step), fields)
    out = {}
    for key, pattern in patterns.items():
        rng = np.random.default_rng([seed, sum(map(ord, key)), index])
        cand: Candidates = candidates(pattern, step, grid, masks[key], rng)
        picks = [(r, c, 1) for r, c in cand.positives] + [(r, c, 0) for r, c in cand.negatives[:neg_per_step[key]]]
        planes = [(gen.landfrac >= 0.5).astype(np.float32) if v == LANDMASK else fields[v]
                  for v in pattern.variables]
        h, w = pattern.size
        data = np.empty((len(picks), h, w, len(planes)), np.float32)
        mask = np.empty((len(picks), h, w), np.uint8)
        for j, (r, c, _) in enumerate(picks):
            rows, cols = window_index(r, c, pattern.size, grid.shape[1])
            for k, plane in enumerate(planes):
                data[j, ..., k] = plane[rows][:, cols]
            mask[j] = masks[key][rows][:, cols]
        out[key] = {"data": data, "mask": mask, "label": np.array([p[2] for p in picks], np.int8),
                    "row": np.array([p[0] for p in picks], np.int32), "col": np.array([p[1] for p in picks], np.int32)}
    return out


def _block(task):
    """Worker: the patches of a block of contiguous steps, skipping patterns the parent marked finished."""
    indices, patterns, neg_per_step, seed, labeller_cfg = task
    flags = _STATE["flags"]
    keys = list(patterns)
    out = []
    for index in indices:
        active = {k: p for i, k in enumerate(keys) if not flags[i] for p in [patterns[k]]}
        out.append((index, step_patches(_STATE["gen"], index, active, neg_per_step, seed, labeller_cfg)
                    if active else {}))
    return out


class _Pool:
    """Appends one pattern's candidates to a temporary HDF5 file (AR candidates do not fit in memory)."""

    def __init__(self, path: Path, pattern: Pattern):
        import h5py

        self.path = path
        self.f = h5py.File(path, "w")
        h, w = pattern.size
        c = len(pattern.variables)
        self.f.create_dataset("data", (0, h, w, c), np.float32, maxshape=(None, h, w, c), chunks=(1, h, w, c))
        self.f.create_dataset("mask", (0, h, w), np.uint8, maxshape=(None, h, w), chunks=(1, h, w))
        for name, dtype in (("label", np.int8), ("row", np.int32), ("col", np.int32), ("source", np.int32)):
            self.f.create_dataset(name, (0,), dtype, maxshape=(None,), chunks=(4096,))
        self.positives = self.negatives = 0

    def append(self, index: int, part: dict[str, np.ndarray]) -> None:
        n = len(part["label"])
        if not n:
            return
        part = dict(part, source=np.full(n, index, np.int32))
        for name, value in part.items():
            ds = self.f[name]
            ds.resize(ds.shape[0] + n, axis=0)
            ds[-n:] = value
        self.positives += int(part["label"].sum())
        self.negatives += int(n - part["label"].sum())

    def close(self) -> None:
        self.f.close()


def _finish(pool: _Pool, target: Path, pattern: Pattern, n_steps: int, want: tuple[int, int], stamps: list[str],
            train_fraction: float, seed: int, provenance: dict) -> dict:
    """Pick the counts per split (time-split at step round(train_fraction x n_steps)), write the final file."""
    import h5py

    from exascale_climate.utils.io import atomic_path

    f = pool.f
    source, label = f["source"][...], f["label"][...]
    n_train_steps = _train_steps(n_steps, train_fraction)
    rng = np.random.default_rng([seed, sum(map(ord, pattern.key)), 2**20])
    chosen, summary = {}, {}
    for split, share in (("train", train_fraction), ("test", 1.0 - train_fraction)):
        in_split = (source < n_train_steps) if split == "train" else (source >= n_train_steps) & (source < n_steps)
        pick = []
        for lab, n_want in ((1, want[0]), (0, want[1])):
            pool_idx = np.flatnonzero(in_split & (label == lab))
            n = min(pool_idx.size, int(round(n_want * share)))
            if n < int(round(n_want * share)):
                log.warning("%s %s: %d %s available of %d asked", pattern.key, split, pool_idx.size,
                            "positives" if lab else "negatives", int(round(n_want * share)))
            pick.append(np.sort(rng.choice(pool_idx, size=n, replace=False)) if n else np.zeros(0, np.int64))
        chosen[split] = np.sort(np.concatenate(pick))
        summary[split] = (len(pick[0]), len(pick[1]))
    with atomic_path(target) as tmp:
        with h5py.File(tmp, "w") as out:
            out.attrs.update(provenance)
            out.attrs.update({"steps_used": n_steps, "train_steps": n_train_steps,
                              "sources": json.dumps(["see dataset /sources"])})
            out.create_dataset("sources", data=np.array(stamps[:n_steps], dtype=h5py.string_dtype()))
            h, w = pattern.size
            c = len(pattern.variables)
            for split, idx in chosen.items():
                g = out.create_group(split)
                n = len(idx)
                data = g.create_dataset("data", (n, h, w, c), np.float32, chunks=(1, h, w, c) if n else None)
                masks = g.create_dataset("mask", (n, h, w), np.uint8)
                for name in ("label", "row", "col", "source"):
                    g.create_dataset(name, data=f[name][...][idx])
                for s in range(0, n, 256):  # bounded memory: AR patches are large
                    part = idx[s:s + 256]
                    data[s:s + len(part)] = f["data"][part]
                    masks[s:s + len(part)] = f["mask"][part]
    return summary


def _train_steps(n_steps: int, train_fraction: float) -> int:
    return min(n_steps - 1, max(1, int(round(train_fraction * n_steps))))


def _enough(per_step: list[tuple[int, int]], want: tuple[int, int], train_fraction: float) -> bool:
    """Do the steps so far, cut by time as `_finish` will cut them, hold the counts of both splits?"""
    if len(per_step) < 2:
        return False
    counts = np.asarray(per_step)
    cut = _train_steps(len(per_step), train_fraction)
    for part, share in ((counts[:cut], train_fraction), (counts[cut:], 1.0 - train_fraction)):
        have = part.sum(axis=0)
        if have[0] < round(want[0] * share) or have[1] < round(want[1] * share):
            return False
    return True


def extract_synthetic(out_dir: str | Path, synth_cfg: SynthConfig, patterns=("tc", "ar", "wf"), counts=None,
                      sizes=None, train_fraction: float = 0.8, seed: int = 0,
                      labeller_cfg: LabellerConfig | None = None,
                      progress: bool = True) -> dict:
    """Stream generated steps into <out_dir>/<pattern>.h5; at most synth_cfg.samples steps.

    Returns {pattern: {"train": (pos, neg), "test": (pos, neg), "steps": N}}.
    """
    import multiprocessing as mp

    from exascale_climate import __version__
    from exascale_climate.data.synthetic import Generator, make_catalogue, sample_time
    from exascale_climate.utils.io import remove_path

    labeller_cfg = labeller_cfg or LabellerConfig()
    if not 0.0 < train_fraction < 1.0:
        raise ConfigError(f"--train-fraction: {train_fraction} must be between 0 and 1")
    if synth_cfg.samples < 2:
        raise ConfigError("--synthetic: need at least two time steps to split by time")
    if not synth_cfg.fronts and "wf" in patterns:
        raise ConfigError("data.synth.fronts is false: the generator draws no weather fronts for the WF patches")
    keys = list(patterns)
    pats = {k: dataclasses.replace(PATTERNS[k], size=(sizes or {}).get(k, PATTERNS[k].size)) for k in keys}
    H, W = synth_cfg.grid
    for k, p in pats.items():
        if p.size[0] > H or p.size[1] > W:
            raise ConfigError(f"patch size {p.size[0]}x{p.size[1]} of pattern {k} does not fit the {H}x{W} grid; "
                              f"give a smaller one with --size {k}=HxW")
    want = {k: tuple((counts or {}).get(k, (PATTERNS[k].positives, PATTERNS[k].negatives))) for k in keys}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    catalogue = make_catalogue(synth_cfg)
    stamps = [sample_time(i, synth_cfg.hours_per_step)[1] for i in range(synth_cfg.samples)]
    pools = {k: _Pool(out_dir / f".{k}.candidates.h5", pats[k]) for k in keys}
    provenance = {
        k: {"format": FORMAT, "pattern": k, "pattern_name": pats[k].name,
            "variables": json.dumps(list(pats[k].variables)), "size": list(pats[k].size), "requested": list(want[k]),
            "seed": seed, "train_fraction": train_fraction, "stopped_early": False,
            "split": "by time: the first round(train_fraction x steps_used) generated steps are train",
            "generator": json.dumps(dataclasses.asdict(synth_cfg)),
            "labeller": json.dumps(dataclasses.asdict(labeller_cfg)),
            "created_by": f"exascale_climate {__version__} (exaclimate patches extract --synthetic, streamed)",
            "land_sea_mask": "data/geography.py landfrac >= 0.5" if LANDMASK in pats[k].variables else ""}
        for k in keys}
    done: dict[str, int] = {}
    summary: dict = {}
    per_step: dict[str, list[tuple[int, int]]] = {k: [] for k in keys}  # (positives, negatives) kept per step
    consumed = 0  # steps taken, in order
    stop = []  # SIGTERM / SIGINT: stop generating, write every unfinished pattern from the steps taken

    def request_stop(signum, frame):
        stop.append(signum)

    def consume(index, parts, flags):
        nonlocal consumed
        consumed = index + 1
        for k, part in parts.items():
            if k in done:
                continue
            pools[k].append(index, part)
            p = pools[k]
            per_step[k].append((int(part["label"].sum()), int(len(part["label"]) - part["label"].sum())))
            if _enough(per_step[k], want[k], train_fraction):
                done[k] = index + 1
                flags[keys.index(k)] = 1
                summary[k] = _finish(p, out_dir / f"{k}.h5", pats[k], index + 1, want[k], stamps, train_fraction,
                                     seed, provenance[k])
                summary[k]["steps"] = index + 1
                log.info("%s: %d steps -> %s %s", k, index + 1, out_dir / f"{k}.h5", summary[k])

    import signal
    import threading

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # pilot: the positive rate of the first steps sets the negatives each step must give
        gen = Generator(synth_cfg, catalogue)
        flags = [0] * len(keys)
        pilot = min(PILOT_STEPS, synth_cfg.samples)
        pilot_parts = [(i, step_patches(gen, i, pats, {k: NEG_TRIES_PER_FILE for k in keys}, seed, labeller_cfg))
                       for i in range(pilot)]
        neg_per_step = {}
        for k in keys:
            rate = max(sum(int(p[k]["label"].sum()) for _, p in pilot_parts) / pilot, 0.5)
            neg_per_step[k] = int(min(NEG_TRIES_PER_FILE,
                                      math.ceil(1.3 * rate * want[k][1] / max(want[k][0], 1)) + 1))
        log.info("negatives per step: %s", neg_per_step)
        for i, parts in pilot_parts:
            trimmed = {}
            for k, part in parts.items():
                keep = np.flatnonzero(part["label"] == 1).tolist() + np.flatnonzero(part["label"] == 0)[
                    :neg_per_step[k]].tolist()
                trimmed[k] = {name: v[keep] for name, v in part.items()}
            consume(i, trimmed, flags)
        del pilot_parts, gen
        rest = list(range(pilot, synth_cfg.samples))
        blocks = [rest[s:s + BLOCK] for s in range(0, len(rest), BLOCK)]
        workers = max(1, min(synth_cfg.workers, len(blocks)))
        ctx = mp.get_context("fork")
        shared = ctx.Array("b", [1 if k in done else 0 for k in keys])
        tasks = ((b, pats, neg_per_step, seed, labeller_cfg) for b in blocks)
        if blocks and len(done) < len(keys) and not stop:
            with ctx.Pool(workers, initializer=_init_worker, initargs=(synth_cfg, catalogue, shared)) as pool:
                for result in pool.imap(_block, tasks):
                    for index, parts in result:
                        consume(index, parts, shared)
                    if progress and result:
                        log.info("step %d: %s", result[-1][0] + 1,
                                 ", ".join(f"{k} {pools[k].positives}+/{pools[k].negatives}-" for k in keys))
                    if len(done) == len(keys) or stop:
                        pool.terminate()
                        break
        if stop:
            log.warning("stopped by signal %d after %d steps: writing the unfinished patterns from them",
                        stop[0], consumed)
        for k in keys:  # ran out of steps (or stopped): write what there is
            if k not in done and consumed >= 2:
                log.warning("%s: %d steps gave %d positives / %d negatives of %s asked", k, consumed,
                            pools[k].positives, pools[k].negatives, want[k])
                provenance[k]["stopped_early"] = bool(stop)
                summary[k] = _finish(pools[k], out_dir / f"{k}.h5", pats[k], consumed, want[k], stamps,
                                     train_fraction, seed, provenance[k])
                summary[k]["steps"] = consumed
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for p in pools.values():
            p.close()
            remove_path(p.path)
    return summary

