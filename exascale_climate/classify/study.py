"""Facts of the 2017 study ("Semi-Supervised Deep Learning for Climate @ Scale", and Liu et al. 2016,
"Application of deep convolutional neural networks for detecting extreme weather in climate datasets"):
patch sizes, variables, example counts, the three ConvNets and the published accuracies. One home for them."""
from __future__ import annotations

from dataclasses import dataclass

LANDMASK = "LANDMASK"  # not a CAM5 output variable: the land-sea mask the AR patches carry
METHODS = ("logreg", "knn", "svm", "rf", "convnet")
METHOD_NAMES = {"logreg": "logistic regression", "knn": "KNN", "svm": "SVM", "rf": "random forest",
                "convnet": "ConvNet"}


@dataclass(frozen=True)
class Layer:
    kind: str  # conv | pool | fc
    size: int  # kernel / pool size, or units
    filters: int = 0


@dataclass(frozen=True)
class Pattern:
    key: str
    name: str
    size: tuple[int, int]  # patch (rows, cols) on the paper's 768 x 1152 grid
    variables: tuple[str, ...]
    positives: int
    negatives: int
    convnet: tuple[Layer, ...]
    paper: dict  # method -> (train %, test %)


PATTERNS: dict[str, Pattern] = {
    "tc": Pattern("tc", "tropical cyclone", (32, 32),
                  ("PSL", "UBOT", "VBOT", "TMQ", "U850", "V850", "T200", "T500"), 10000, 10000,
                  (Layer("conv", 5, 8), Layer("pool", 2), Layer("conv", 5, 16), Layer("pool", 2), Layer("fc", 50),
                   Layer("fc", 2)),
                  {"logreg": (96.8, 95.85), "knn": (98.1, 97.85), "svm": (97.0, 95.85), "rf": (99.2, 99.4),
                   "convnet": (99.3, 99.1)}),
    "ar": Pattern("ar", "atmospheric river", (148, 224), ("TMQ", LANDMASK), 6500, 6800,
                  (Layer("conv", 12, 8), Layer("pool", 3), Layer("conv", 12, 16), Layer("pool", 2),
                   Layer("fc", 200), Layer("fc", 2)),
                  {"logreg": (81.97, 82.65), "knn": (79.7, 81.7), "svm": (81.6, 83.0), "rf": (87.9, 88.4),
                   "convnet": (90.5, 90.0)}),
    "wf": Pattern("wf", "weather front", (27, 60), ("TREFHT", "PRECT", "PSL"), 5600, 6500,
                  (Layer("conv", 5, 16), Layer("pool", 2), Layer("conv", 5, 16), Layer("pool", 2), Layer("fc", 400),
                   Layer("fc", 2)),
                  {"logreg": (84.9, 89.8), "knn": (72.46, 76.45), "svm": (84.35, 90.2), "rf": (80.97, 87.5),
                   "convnet": (88.7, 89.4)}),
}
