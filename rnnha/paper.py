"""The paper's published figures (Wei et al., ACCV 2018, arXiv 1812.04239), for printing beside ours.

Only figures we could check are here, each with where it was read. The three below are the paper's
headline RNN-HA results as a survey list quotes them, without naming the backbone or input size; the
full per-backbone tables (VGG_CNN_M_1024, ResNet-50, 672 px) and the VehicleID top-5 figures still need
transcribing from the paper's own tables (docs/paper.md lists what is missing). A figure whose backbone
is None is the paper's best RNN-HA row.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Figure", "PUBLISHED", "published"]

_SURVEY = ("github.com/lyuweiwang/awesome-vehicle-re-identification (README, RNN-HA entry), quoting the "
           "paper; not yet checked against the paper's tables")


@dataclass(frozen=True)
class Figure:
    kind: str  # dataset kind
    row: str  # as DatasetKind.rows names it
    metric: str
    value: float
    backbone: str | None = None  # None: the paper's best RNN-HA row, backbone not stated by the source
    input_size: int | None = None
    source: str = _SURVEY


PUBLISHED: list[Figure] = [
    Figure("veri", "VeRi-776", "mAP", 56.80),
    Figure("veri", "VeRi-776", "top-1", 74.79),
    Figure("vehicleid", "VehicleID small (800)", "top-1", 83.8),
]


def published(kind: str, backbone: str | None, input_size: int | None, row: str, metric: str) -> float | None:
    """The paper's figure for this row: the one for this backbone and input size if the paper gives it,
    else its best RNN-HA row's, else None."""
    matches = [f for f in PUBLISHED if (f.kind, f.row, f.metric) == (kind, row, metric)]
    for f in matches:
        if f.backbone == backbone and f.input_size in (None, input_size):
            return f.value
    best = [f.value for f in matches if f.backbone is None]
    return best[0] if best else None
