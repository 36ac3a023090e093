"""Prior correction: take back, at inference, part of the class weighting a model was trained with.

Why: a weighted cross-entropy (pipeline.class_weighting) is minimised by p_k proportional to w_k * q_k, the true
class probability q_k scaled by the class's loss weight w_k, so rare classes (TC, AR) are over-predicted on
purpose. Dividing by w^1 gives back q (the most accurate pixels), w^0 keeps the weighted answer (more recall of
rare classes); mean IoU, which rewards both, is best in between. The exponent is chosen on validation data
(`evaluate --prior-sweep`) and then applied (`evaluate|predict --prior-correction A`): a free +0.01-0.03 mean IoU
measured here (docs/TRAINING.md). The same shift as the "logit adjustment" of long-tail classification
(Menon et al., ICLR 2021), here with the training's own weights.
"""
from __future__ import annotations

import numpy as np

from exascale_climate.errors import ExaclimateError

SWEEP = (0.0, 0.25, 0.5, 0.75, 1.0)


def trained_weights(cfg, stats) -> np.ndarray:
    """The class weights the run's loss used (its class_weighting on its stats' class counts)."""
    from exascale_climate.data.stats import class_weights

    pcfg = cfg.pipeline
    return class_weights(stats.class_counts, pcfg.class_weighting, pcfg.class_weight_power)


def check_exponent(exponent: float) -> float:
    exponent = float(exponent)
    if not np.isfinite(exponent) or not 0.0 <= exponent <= 1.0:
        raise ExaclimateError(f"--prior-correction {exponent:g}: must lie in [0, 1] (0: as trained, 1: the class "
                              "weights fully taken back)")
    return exponent


def corrected_classes(probabilities: np.ndarray, weights: np.ndarray, exponent: float) -> np.ndarray:
    """argmax_k p_k / w_k^exponent over the last axis (exponent 0: the plain argmax)."""
    if exponent == 0.0:
        return probabilities.argmax(-1)
    scale = np.asarray(weights, np.float64) ** -float(exponent)
    return (probabilities * scale.astype(np.float32)).argmax(-1)


def sweep_report(exponents, confusions: np.ndarray, weights: np.ndarray) -> dict:
    """Mean IoU and per-class IoU for each exponent (from each exponent's confusion matrix), and the best."""
    from exascale_climate.evaluate.evaluate import scores

    rows = [scores(cm) for cm in confusions]
    best = int(np.argmax([r["mean_iou"] for r in rows]))
    return {"weights": [float(w) for w in weights], "exponents": [float(a) for a in exponents],
            "mean_iou": [r["mean_iou"] for r in rows], "iou": [r["iou"] for r in rows],
            "best": float(exponents[best]), "confusion_matrices": [r["confusion_matrix"] for r in rows]}


def format_sweep(sweep: dict) -> str:
    """A few lines: mean IoU per exponent, the best marked, and what to pass on."""
    lines = ["prior correction (class probabilities / trained class weights^a; weights "
             + ", ".join(f"{w:.3g}" for w in sweep["weights"]) + "):"]
    for a, m, iou in zip(sweep["exponents"], sweep["mean_iou"], sweep["iou"]):
        per_class = " ".join(f"{k} {v:.4f}" if v is not None else f"{k} n/a" for k, v in iou.items())
        lines.append(f"  a={a:<5g} mean IoU {m:.4f}  ({per_class})" + ("  <- best" if a == sweep["best"] else ""))
    if len(set(sweep["weights"])) == 1:
        lines.append("  (the run trained without class weights: nothing to take back)")
    else:
        lines.append(f"  choose a on validation data, then: --prior-correction {sweep['best']:g}")
    return "\n".join(lines)
