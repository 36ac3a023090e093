"""`exaclimate classify train|evaluate`: the four scikit-learn baselines and the ConvNet, tuned with Optuna.

Why Optuna: it is maintained (the talk's Spearmint is not), its TPE sampler is a Bayesian optimiser of the same
family as Spearmint's Gaussian-process one, it needs no server, and its ask/tell interface lets rank 0 choose the
parameters while every Horovod rank trains the ConvNet trial. Every method gets the same fixed budget:
`classify.trials` trials (and `classify.tune_timeout` seconds), each fitting at most
`classify.max_tune_examples` patches and scored on the last `classify.tune_fraction` (in time) of the training
patches; the best parameters are then fitted on all training patches. The baselines see standardised pixels,
or with `classify.pca_components` > 0 their principal components (what makes kernel SVM and the 66,304-pixel AR
patches tractable at the study's counts on a CPU; see docs/PATCH_STUDY.md).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from exascale_climate.classify.patches import load_patches
from exascale_climate.classify.study import METHODS
from exascale_climate.config import Config
from exascale_climate.errors import ConfigError
from exascale_climate.utils.log import get_logger

log = get_logger("classify")


def suggest(method: str, trial) -> dict:
    """The search space of each method."""
    if method == "logreg":
        return {"C": trial.suggest_float("C", 1e-4, 1e2, log=True)}
    if method == "knn":
        return {"n_neighbors": trial.suggest_int("n_neighbors", 1, 40),
                "weights": trial.suggest_categorical("weights", ["uniform", "distance"])}
    if method == "svm":
        return {"C": trial.suggest_float("C", 1e-2, 1e3, log=True),
                "gamma": trial.suggest_float("gamma", 1e-5, 1e-1, log=True)}
    if method == "rf":
        return {"n_estimators": trial.suggest_int("n_estimators", 50, 300),
                "max_depth": trial.suggest_int("max_depth", 4, 32),
                "max_features": trial.suggest_categorical("max_features", ["sqrt", "log2"])}
    if method == "convnet":
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
                "dropout": trial.suggest_float("dropout", 0.0, 0.5)}
    raise ConfigError(f"--method: {method!r} is not one of {list(METHODS)}")


def make_baseline(method: str, params: dict, seed: int = 0):
    """One of the four scikit-learn baselines (its input: standardised, possibly PCA-reduced, features)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    return {"logreg": lambda: LogisticRegression(max_iter=300, **params),
            "knn": lambda: KNeighborsClassifier(**params),
            "svm": lambda: SVC(kernel="rbf", random_state=seed, cache_size=1000, **params),
            "rf": lambda: RandomForestClassifier(random_state=seed, n_jobs=1, **params)}[method]()


class Features:
    """Flattened patches -> standardised pixels (-> PCA components), fitted once per training set.

    Fitted once and shared by every trial and the final fit (the talk's pipelines would refit them per
    trial); chunked, so 10,000 AR patches of 66,304 pixels never exist as a float64 copy.
    """

    CHUNK = 1024

    def __init__(self, components: int = 0, fit_examples: int = 4000, seed: int = 0):
        self.components, self.fit_examples, self.seed = components, fit_examples, seed
        self.scaler = self.pca = None

    def fit(self, x: np.ndarray) -> "Features":
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        self.scaler = StandardScaler()
        for s in range(0, len(x), self.CHUNK):
            self.scaler.partial_fit(flatten(x[s:s + self.CHUNK]))
        if self.components:
            rng = np.random.default_rng(self.seed)
            pick = np.sort(rng.choice(len(x), min(len(x), self.fit_examples), replace=False))
            sample = self.scaler.transform(flatten(x[pick]))
            n = min(self.components, *sample.shape)
            self.pca = PCA(n, svd_solver="randomized", random_state=self.seed).fit(sample)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        width = self.pca.n_components_ if self.pca is not None else int(np.prod(x.shape[1:]))
        out = np.empty((len(x), width), np.float32)
        for s in range(0, len(x), self.CHUNK):
            z = self.scaler.transform(flatten(x[s:s + self.CHUNK]))
            out[s:s + len(z)] = self.pca.transform(z) if self.pca is not None else z
        return out

    def steps(self) -> list:
        """The fitted transformers as pipeline steps (flatten, scale[, pca])."""
        from sklearn.preprocessing import FunctionTransformer

        out = [("flatten", FunctionTransformer(flatten).fit(np.zeros((1, 1)))), ("scale", self.scaler)]
        return out + ([("pca", self.pca)] if self.pca is not None else [])


def flatten(x: np.ndarray) -> np.ndarray:
    """(N, h, w, C) patches -> (N, h*w*C) features (module level, so fitted pipelines pickle)."""
    return x.reshape(len(x), -1)


def _convnet(params: dict, cfg: Config, world, reducer, epochs: int, pattern: str):
    from exascale_climate.classify.convnet import ConvNetClassifier

    return ConvNetClassifier(pattern, world, reducer, batch_size=cfg.classify.batch_size, epochs=epochs,
                             seed=cfg.classify.seed, **params)


def _tune_split(n: int, fraction: float, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, score): the patches are in time order, so the last `fraction` scores the trials."""
    cut = int(round(n * (1 - fraction)))
    fit, score = np.arange(cut), np.arange(cut, n)
    rng = np.random.default_rng(seed)
    if fit.size > cap:
        fit = np.sort(rng.choice(fit, cap, replace=False))
    if score.size > cap // 2:
        score = np.sort(rng.choice(score, cap // 2, replace=False))
    return fit, score


def train(patch_file: str | Path, method: str, run_dir: str | Path, cfg: Config, pattern: str | None = None) -> dict:
    """Tune, fit on the training split, save the model and `result.json` (train accuracy, parameters, times).

    Budget: at most `classify.trials` Optuna trials and, when `classify.tune_timeout` > 0, no new trial once
    that many seconds of tuning have passed (at least one trial runs). Trials fit at most
    `classify.max_tune_examples` patches; the best parameters are then fitted on all training patches.
    """
    import optuna

    from exascale_climate.train.distributed import GradientReducer, broadcast_object, setup_world

    if method not in METHODS:
        raise ConfigError(f"--method: {method!r} is not one of {list(METHODS)}")
    data = load_patches(patch_file, "train", pattern)
    pattern = pattern or Path(patch_file).stem
    if len(np.unique(data.y)) < 2:
        raise ConfigError(f"{patch_file}: the training split needs both classes to train a classifier")
    world = setup_world(cfg) if method == "convnet" else None
    reducer = GradientReducer.from_config(world, cfg.distributed) if world is not None else None
    is_root = world is None or world.is_root
    ccfg = cfg.classify
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=ccfg.seed))
    fit_idx, score_idx = _tune_split(len(data.y), ccfg.tune_fraction, ccfg.max_tune_examples, ccfg.seed)
    t0, cpu0 = time.perf_counter(), time.process_time()
    features = None
    if method == "convnet":
        x = data.x
    else:  # standardise (and reduce) once for all trials and the final fit
        features = Features(ccfg.pca_components, ccfg.pca_fit_examples, ccfg.seed).fit(data.x)
        x = features.transform(data.x)
        del data.x
    features_s = time.perf_counter() - t0

    def fitted(params, epochs, idx):
        if method == "convnet":
            return _convnet(params, cfg, world, reducer, epochs, pattern).fit(x[idx], data.y[idx])
        return make_baseline(method, params, ccfg.seed).fit(x[idx], data.y[idx])

    t1 = time.perf_counter()
    trials_run = 0
    for _ in range(ccfg.trials):
        stop = bool(ccfg.tune_timeout) and trials_run > 0 and time.perf_counter() - t1 > ccfg.tune_timeout
        if world is not None:
            stop = broadcast_object(world, stop, name="classify_stop")
        if stop:
            break
        trial = study.ask() if is_root else None
        params = suggest(method, trial) if is_root else None
        if world is not None:
            params = broadcast_object(world, params, name="classify_params")
        if len(np.unique(data.y[fit_idx])) < 2:
            value = 0.0
        else:
            model = fitted(params, ccfg.tune_epochs, fit_idx)
            value = float(model.score(x[score_idx], data.y[score_idx]))
        if is_root:
            study.tell(trial, value)
        trials_run += 1
    tune_s = time.perf_counter() - t1
    tune_cpu = time.process_time() - cpu0
    best = study.best_params if is_root else None
    if world is not None:
        best = broadcast_object(world, best, name="classify_best")
    t0 = time.perf_counter()
    model = fitted(best, ccfg.epochs, np.arange(len(data.y)))
    fit_s = time.perf_counter() - t0
    train_acc = float(model.score(x, data.y))
    if features is not None:  # the saved model takes raw patches
        from sklearn.pipeline import Pipeline

        model = Pipeline([*features.steps(), ("model", model)])
    result = {"pattern": pattern, "method": method, "patch_file": str(Path(patch_file).resolve()),
              "train_examples": int(len(data.y)), "train_positives": int(data.y.sum()),
              "train_accuracy": train_acc, "best_params": best, "trials": ccfg.trials, "trials_run": trials_run,
              "tune_timeout": ccfg.tune_timeout, "tune_fit_examples": int(len(fit_idx)),
              "tune_score_examples": int(len(score_idx)),
              "features": ("pixels" if features is None or features.pca is None
                           else f"pca{features.pca.n_components_}"),
              "pca_explained_variance": (float(features.pca.explained_variance_ratio_.sum())
                                         if features is not None and features.pca is not None else None),
              "best_tune_accuracy": float(study.best_value) if is_root else None,
              "features_seconds": features_s, "tune_seconds": tune_s, "fit_seconds": fit_s,
              "ranks": world.size if world else 1,
              "tune_cpu_seconds": tune_cpu,
              "cpu_seconds": time.process_time() - cpu0}  # this process, all threads: less sensitive to sharing
    if is_root:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_model(model, method, run_dir)
        _write_result(run_dir, result)
    log.info("%s/%s: train accuracy %.4f (tune %.1f s, fit %.1f s)", pattern, method, train_acc, tune_s, fit_s)
    return result


def save_model(model, method: str, run_dir: Path) -> None:
    if method == "convnet":
        model.save(run_dir / "model")
        return
    import joblib

    from exascale_climate.utils.io import atomic_path

    with atomic_path(run_dir / "model.joblib") as tmp:
        joblib.dump(model, tmp)


def load_model(run_dir: Path, method: str, pattern: str):
    if method == "convnet":
        from exascale_climate.classify.convnet import ConvNetClassifier

        return ConvNetClassifier.load(run_dir / "model", pattern)
    import joblib

    return joblib.load(run_dir / "model.joblib")


def _write_result(run_dir: Path, result: dict) -> None:
    from exascale_climate.utils.io import atomic_write_text

    atomic_write_text(run_dir / "result.json", json.dumps(result, indent=2) + "\n")


def read_result(run_dir: str | Path) -> dict:
    from exascale_climate.errors import DataError

    path = Path(run_dir) / "result.json"
    if not path.is_file():
        raise DataError(path, "no result: run `exaclimate classify train` first")
    return json.loads(path.read_text())


def evaluate(run_dir: str | Path, patch_file: str | Path | None = None) -> dict:
    """Test accuracy of a trained run; writes predictions.npz (for the notebook) and updates result.json."""
    run_dir = Path(run_dir)
    result = read_result(run_dir)
    patch_file = patch_file or result["patch_file"]
    data = load_patches(patch_file, "test", result["pattern"])
    model = load_model(run_dir, result["method"], result["pattern"])
    t0 = time.perf_counter()
    pred = np.asarray(model.predict(data.x)).astype(np.int64)
    result.update({"test_examples": int(len(data.y)), "test_positives": int(data.y.sum()),
                   "test_accuracy": float((pred == data.y).mean()) if len(data.y) else float("nan"),
                   "predict_seconds": time.perf_counter() - t0})
    from exascale_climate.utils.io import atomic_path

    with atomic_path(run_dir / "predictions.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, pred=pred, label=data.y)
    _write_result(run_dir, result)
    return result
