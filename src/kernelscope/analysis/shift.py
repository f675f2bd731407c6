"""Distribution shift: which channels go quiet (or fire more) on out-of-distribution images?

For a layer and two image sets, in-distribution (ID) and out-of-distribution (OOD):

Per channel
    the spatial maximum of the channel's map on each image (its distribution over each set);
    the firing rate above the ID threshold -- the 95th percentile of the channel's ID maxima,
    so the ID rate is 5% by construction and the OOD rate says how often the channel fires
    as strongly on OOD images; and the AUROC of the maximum as a score for "ID" (1.0: always
    higher on ID, 0.5: no difference, 0.0: always higher on OOD) with a bootstrap 95% interval
    (images resampled within each set). A channel *goes quiet* on OOD when the whole interval
    is above 0.5 and *fires more* on OOD when it is below 0.5 (such units exist in published
    work too, and are listed, not hidden).

Network level (higher = "more in-distribution")
    maximum softmax probability, maximum logit, energy score ``logsumexp(logits)``, and the
    Mahalanobis score ``-min_k (f - mu_k)^T S^-1 (f - mu_k)`` on the layer's globally average-
    pooled features, with class means ``mu_k`` and one shared covariance ``S`` fitted on ID
    training features (Lee et al., 2018). Each with AUROC and the false-positive rate at 95%
    true-positive rate (the share of OOD images scored at least as high as the score that
    keeps 95% of ID images).

The same report for the network at initialisation is the control: what an untrained
network of the same shape already separates (input statistics alone can do a lot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope._display import Displayed, Summary
from kernelscope.analysis.hooks import _to_tensor, capture, read_point
from kernelscope.analysis.passes import Batch, Checkpoint, Images, PassReport, as_images, run_pass
from kernelscope.errors import KernelscopeError

if TYPE_CHECKING:
    from torch import nn

    from kernelscope.train.distributed import Context

__all__ = ["auroc", "bootstrap_auroc", "fpr_at_tpr", "collect", "mahalanobis_fit", "shift_report",
           "ShiftResult", "shift", "check_not_identical"]

ID_PERCENTILE = 95.0


def auroc(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Area under the ROC curve of scores (positives should score higher), along axis 0; ties count 1/2.

    Examples
    --------
    >>> float(auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])))
    1.0
    >>> float(auroc(np.array([1.0, 2.0]), np.array([1.0, 2.0])))
    0.5
    """
    from scipy.stats import rankdata

    positive, negative = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    n1, n2 = positive.shape[0], negative.shape[0]
    if n1 == 0 or n2 == 0:
        raise KernelscopeError(f"AUROC needs images in both sets, got {n1} and {n2}")
    ranks = rankdata(np.concatenate([positive, negative], axis=0), axis=0)
    u = ranks[:n1].sum(axis=0) - n1 * (n1 + 1) / 2.0
    return u / (n1 * n2)


def bootstrap_auroc(positive: np.ndarray, negative: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95, chunk: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of :func:`auroc` (each set resampled with replacement).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> low, high = bootstrap_auroc(rng.normal(1, 1, 200), rng.normal(0, 1, 200), n_boot=200)
    >>> bool(0.5 < low < 0.76 < high < 0.9)
    True
    """
    from scipy.stats import rankdata

    positive, negative = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n1, n2 = positive.shape[0], negative.shape[0]
    values = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        pos = positive[rng.integers(0, n1, (b, n1))]  # (b, n1, ...)
        neg = negative[rng.integers(0, n2, (b, n2))]  # (b, n2, ...)
        ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
        values.append((ranks[:, :n1].sum(axis=1) - n1 * (n1 + 1) / 2.0) / (n1 * n2))
    boot = np.concatenate(values, axis=0)
    alpha = (1.0 - level) / 2.0
    return np.quantile(boot, alpha, axis=0), np.quantile(boot, 1.0 - alpha, axis=0)


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Share of OOD scores ``>=`` the threshold that keeps ``tpr`` of the ID scores.

    Examples
    --------
    >>> fpr_at_tpr(np.arange(100.0), np.arange(100.0) + 50)
    1.0
    >>> fpr_at_tpr(np.arange(100.0), np.arange(100.0) - 100)
    0.0
    """
    ordered = np.sort(np.asarray(in_scores, dtype=np.float64))
    threshold = ordered[int(np.floor((1.0 - tpr) * ordered.size))]
    return float(np.mean(np.asarray(out_scores) >= threshold))


def check_not_identical(in_images: np.ndarray, out_images: np.ndarray) -> None:
    """Raise when the OOD set is the ID set (or made only of ID images): an AUROC of 0.5 would mean nothing.

    Examples
    --------
    >>> x = np.zeros((3, 1, 2, 2)); x[1] = 1; x[2] = 2
    >>> check_not_identical(x, x[::-1])
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: the out-of-distribution set is identical to the in-distribution set (all 3 images also occur in it); give different data
    """
    if in_images.shape[1:] != out_images.shape[1:]:
        return
    known = {np.ascontiguousarray(image).tobytes() for image in in_images}
    repeated = sum(np.ascontiguousarray(image).tobytes() in known for image in out_images)
    if repeated == out_images.shape[0]:
        what = "identical to" if repeated == in_images.shape[0] else "a subset of"
        raise KernelscopeError(
            f"the out-of-distribution set is {what} the in-distribution set (all {repeated} images "
            "also occur in it); give different data"
        )


def collect(model: nn.Module, layer: str, images: Any, *, batch_size: int = 64,
            desc: str = "", logits: bool = True, context: Context | None = None, workers: int = 0,
            checkpoint: Checkpoint | None = None, name: str = "shift") -> dict[str, np.ndarray]:
    """One pass: per-image channel maxima (N, C), pooled features (N, C) and, when the model's
    output is logits (``logits``), the outputs (N, K); sharded and resumable as
    :func:`kernelscope.analysis.passes.run_pass` (the per-image rows are gathered, in image order)."""
    reducer = _Collect(model, layer, logits=logits)
    report = run_pass({"collect": reducer}, images, context=context, batch_size=batch_size, workers=workers,
                      checkpoint=checkpoint, name=name, desc=desc or f"shift {layer}")
    return reducer.result(report)


class _Collect:
    """A reducer: per-image maxima, pooled features and logits, with their global indices.

    These rows are small (a few numbers per image and channel), so the merge gathers them
    whole and puts them in image order: AUROCs and quantiles are then those of one process.
    """

    def __init__(self, model: nn.Module, layer: str, *, logits: bool = True):
        self.model, self.layer, self.logits = model, layer, logits
        self.parts: dict[str, list[np.ndarray]] = {"index": [], "maxima": [], "pooled": [], "logits": []}
        self.batches = 0

    def update(self, batch: Batch) -> None:
        import torch

        with torch.no_grad(), capture(self.model, self.layer) as out:
            result = self.model(_to_tensor(batch.inputs, self.model))
        acts = out[self.layer].float()
        if acts.dim() != 4:
            raise KernelscopeError(f"layer {self.layer!r} output has shape {tuple(acts.shape)}, not (N, C, H, W)")
        if self.logits and isinstance(result, (tuple, list)):
            raise KernelscopeError(
                f"model {type(self.model).__name__} returns a {type(result).__name__} of outputs, not logits: "
                "give a model whose forward returns the logits (kernelscope.sources.open_source does so "
                "for the pretrained networks it knows, such as onet), or logits=False")
        self.parts["index"].append(np.asarray(batch.indices, dtype=np.int64))
        self.parts["maxima"].append(acts.flatten(2).amax(dim=2).cpu().numpy())  # (B, C)
        self.parts["pooled"].append(acts.mean(dim=(2, 3)).cpu().numpy())  # (B, C)
        if self.logits and isinstance(result, torch.Tensor) and result.dim() == 2:
            self.parts["logits"].append(result.float().cpu().numpy())
        self.batches += 1

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"batches": self.batches}
        for key, parts in self.parts.items():
            if parts:
                state[key] = np.concatenate(parts)
        return state

    def load(self, state: dict[str, Any]) -> None:
        self.batches = int(state["batches"])
        self.parts = {key: [np.asarray(state[key])] if key in state else []
                      for key in ("index", "maxima", "pooled", "logits")}

    def merge(self, states: list[dict[str, Any]]) -> None:
        held = [s for s in states if "index" in s]
        merged: dict[str, Any] = {"batches": sum(int(s["batches"]) for s in states)}
        if held:
            index = np.concatenate([s["index"] for s in held])
            order = np.argsort(index, kind="stable")  # image order, as one process reads them
            for key in ("index", "maxima", "pooled"):
                merged[key] = np.concatenate([s[key] for s in held])[order]
            if all("logits" in s and len(s["logits"]) == len(s["index"]) for s in held):
                merged["logits"] = np.concatenate([s["logits"] for s in held])[order]
        self.load(merged)

    def result(self, report: PassReport | None = None) -> dict[str, np.ndarray]:
        if not self.parts["index"]:
            raise KernelscopeError("the dataset has no images (0 given); give at least one image")
        state = self.state()
        logits = state.get("logits")
        out = {"maxima": state["maxima"], "pooled": state["pooled"],
               "logits": logits if logits is not None and len(logits) == len(state["index"]) else None,
               "index": state["index"]}
        if report is not None:
            out["data"] = report.to_dict()
        return out


class _ClassMoments:
    """A reducer: per-class count, mean and centred scatter of the pooled features (the Mahalanobis fit).

    Batches and ranks are combined with the pairwise update of Chan et al. (1979), which is as
    stable as centring all features at once, so nothing per image is kept or gathered.
    """

    def __init__(self, model: nn.Module, layer: str, labels: np.ndarray):
        self.model, self.layer = model, layer
        self.labels = np.asarray(labels)
        self.classes = np.unique(self.labels)
        self.count = self.mean = self.scatter = None  # (K,), (K, D), (K, D, D)

    def update(self, batch: Batch) -> None:
        import torch

        with torch.no_grad(), capture(self.model, self.layer) as out:
            self.model(_to_tensor(batch.inputs, self.model))
        acts = out[self.layer].float()
        features = acts.mean(dim=(2, 3)).cpu().numpy().astype(np.float64)  # (B, D)
        if not np.isfinite(features).all():
            bad = int((~np.isfinite(features)).sum())
            raise KernelscopeError(f"Mahalanobis fit: {bad} of {features.size} features are NaN or inf; the model's "
                                   f"weights or the training images are not finite")
        which = np.searchsorted(self.classes, self.labels[batch.indices])  # (B,)
        k, d = len(self.classes), features.shape[1]
        count = np.bincount(which, minlength=k).astype(np.float64)
        mean = np.zeros((k, d))
        np.add.at(mean, which, features)
        mean = np.divide(mean, count[:, None], out=np.zeros_like(mean), where=count[:, None] > 0)
        centred = features - mean[which]
        scatter = np.zeros((k, d, d))
        for j in np.unique(which):
            rows = centred[which == j]
            scatter[j] = rows.T @ rows
        self._combine(count, mean, scatter)

    def _combine(self, count: np.ndarray, mean: np.ndarray, scatter: np.ndarray) -> None:
        if self.count is None:
            self.count, self.mean, self.scatter = count, mean, scatter
            return
        total = self.count + count
        delta = mean - self.mean  # (K, D)
        weight = np.divide(count, total, out=np.zeros_like(total), where=total > 0)
        cross = np.divide(self.count * count, total, out=np.zeros_like(total), where=total > 0)
        self.mean = self.mean + delta * weight[:, None]
        self.scatter = self.scatter + scatter + np.einsum("kd,ke->kde", delta, delta) * cross[:, None, None]
        self.count = total

    def state(self) -> dict[str, Any]:
        return {} if self.count is None else {"count": self.count, "mean": self.mean, "scatter": self.scatter}

    def load(self, state: dict[str, Any]) -> None:
        self.count = self.mean = self.scatter = None
        if state:
            self.count, self.mean, self.scatter = (np.asarray(state[k]) for k in ("count", "mean", "scatter"))

    def merge(self, states: list[dict[str, Any]]) -> None:
        self.load({})
        for state in states:
            if state:
                self._combine(np.asarray(state["count"]), np.asarray(state["mean"]), np.asarray(state["scatter"]))

    def fit(self, *, ridge: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
        """Class means (K, D) and the precision (D, D), as :func:`mahalanobis_fit`."""
        if self.count is None:
            raise KernelscopeError("the Mahalanobis training set has no images; give at least one")
        present = self.count > 0
        covariance = self.scatter[present].sum(axis=0) / max(self.count.sum(), 1)
        scale = float(np.trace(covariance) / covariance.shape[0]) or 1.0
        precision = np.linalg.pinv(covariance + ridge * scale * np.eye(covariance.shape[0]))
        return self.mean[present], precision


def mahalanobis_fit(features: np.ndarray, labels: np.ndarray, *, ridge: float = 1e-6):
    """Class means (K, D) and the precision (D, D) of one shared covariance (+ ridge * mean variance).

    Examples
    --------
    >>> f = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 1.0], [12.0, -1.0]])
    >>> means, precision = mahalanobis_fit(f, np.array([0, 0, 1, 1]))
    >>> means.tolist()
    [[1.0, 0.0], [11.0, 0.0]]
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if not np.isfinite(features).all():  # the SVD in pinv would fail with "did not converge"
        bad = int((~np.isfinite(features)).sum())
        raise KernelscopeError(f"Mahalanobis fit: {bad} of {features.size} features are NaN or inf; the model's "
                               f"weights or the training images are not finite")
    classes = np.unique(labels)
    means = np.stack([features[labels == k].mean(axis=0) for k in classes])
    centred = features - means[np.searchsorted(classes, labels)]
    covariance = centred.T @ centred / max(features.shape[0], 1)
    scale = float(np.trace(covariance) / covariance.shape[0]) or 1.0
    precision = np.linalg.pinv(covariance + ridge * scale * np.eye(covariance.shape[0]))
    return means, precision


def _mahalanobis_score(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    diff = features[:, None, :] - means[None]  # (N, K, D)
    distances = np.einsum("nkd,de,nke->nk", diff, precision, diff)
    return -distances.min(axis=1)


def _network_scores(logits: np.ndarray) -> dict[str, np.ndarray]:
    from scipy.special import logsumexp, softmax

    return {"max_softmax": softmax(logits, axis=1).max(axis=1), "max_logit": logits.max(axis=1),
            "energy": logsumexp(logits, axis=1)}


def shift_report(in_stats: dict[str, np.ndarray], out_stats: dict[str, np.ndarray], *,
                 maha: tuple[np.ndarray, np.ndarray] | None = None, n_boot: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """Per-channel and network-level shift numbers from :func:`collect` outputs (see module docstring)."""
    in_max, out_max = in_stats["maxima"], out_stats["maxima"]
    threshold = np.percentile(in_max, ID_PERCENTILE, axis=0)  # (C,)
    area = auroc(in_max, out_max)
    low, high = bootstrap_auroc(in_max, out_max, n_boot=n_boot, seed=seed)
    quantiles = (5, 25, 50, 75, 95)
    channels = {
        "threshold": threshold,
        "rate_in": (in_max > threshold).mean(axis=0), "rate_out": (out_max > threshold).mean(axis=0),
        "auroc": area, "auroc_low": low, "auroc_high": high,
        "in_quantiles": np.percentile(in_max, quantiles, axis=0).T,
        "out_quantiles": np.percentile(out_max, quantiles, axis=0).T,
    }
    quiet = np.nonzero(low > 0.5)[0]
    louder = np.nonzero(high < 0.5)[0]
    network: dict[str, Any] = {}
    notes: list[str] = []
    if in_stats["logits"] is not None and out_stats["logits"] is not None:
        scores_in, scores_out = _network_scores(in_stats["logits"]), _network_scores(out_stats["logits"])
    else:
        scores_in, scores_out = {}, {}
        notes.append("the model's output is not (N, classes) logits: softmax, logit and energy scores skipped")
    if maha is not None:
        scores_in["mahalanobis"] = _mahalanobis_score(in_stats["pooled"], *maha)
        scores_out["mahalanobis"] = _mahalanobis_score(out_stats["pooled"], *maha)
    else:
        notes.append("no labelled in-distribution training images: Mahalanobis score skipped")
    for name in scores_in:
        network[name] = {"auroc": float(auroc(scores_in[name], scores_out[name])),
                         "fpr_at_95_tpr": fpr_at_tpr(scores_in[name], scores_out[name])}
    return {"channels": channels, "quiet_on_ood": quiet.tolist(), "fire_more_on_ood": louder.tolist(),
            "network": network, "notes": notes}


@dataclass(repr=False)
class ShiftResult(Displayed):
    """Distribution-shift report of one layer: trained network and initialisation control.

    In a notebook: how many channels go quiet or fire more, the network scores' AUROCs beside the
    initialisation control, and one row per channel.
    """

    layer: str
    n_in: int
    n_out: int
    trained: dict[str, Any]
    init: dict[str, Any] | None
    maxima: dict[str, np.ndarray] = field(default_factory=dict)  # "in", "out", "init_in", "init_out": (N, C)
    names: tuple[str, str] = ("in", "out")
    at: str = "activation"
    read: str = ""  # what was read, e.g. "features.5 (ReLU after conv features.4)"
    data: dict[str, Any] | None = None  # what each pass read ("in", "out": images used, skipped, processes)

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        ch = self.trained["channels"]
        for c in range(len(ch["auroc"])):
            row = {"channel": c, "auroc": float(ch["auroc"][c]), "auroc_low": float(ch["auroc_low"][c]),
                   "auroc_high": float(ch["auroc_high"][c]), "id_threshold_p95": float(ch["threshold"][c]),
                   "rate_in": float(ch["rate_in"][c]), "rate_out": float(ch["rate_out"][c]),
                   "median_in": float(ch["in_quantiles"][c, 2]), "median_out": float(ch["out_quantiles"][c, 2]),
                   "verdict": ("quiet on OOD" if c in self.trained["quiet_on_ood"] else
                               "fires more on OOD" if c in self.trained["fire_more_on_ood"] else "no clear change")}
            if self.init is not None:
                row["init_auroc"] = float(self.init["channels"]["auroc"][c])
            rows.append(row)
        return rows

    def _display_summary(self) -> Summary:
        t = self.trained
        items: list[tuple[str, Any]] = [
            ("quiet on OOD", len(t["quiet_on_ood"])), ("fire more on OOD", len(t["fire_more_on_ood"])),
            ("median channel AUROC", float(np.median(t["channels"]["auroc"])))]
        if self.init is not None:
            items.append(("init median channel AUROC", float(np.median(self.init["channels"]["auroc"]))))
        for name, v in t["network"].items():
            items.append((f"{name} AUROC", v["auroc"]))
        return Summary(f"shift at {self.read or self.layer}: {self.names[0]} ({self.n_in} images) vs {self.names[1]} "
                       f"({self.n_out})", items, self.rows(), list(t["notes"]), brief=3)

    def to_dict(self) -> dict[str, Any]:
        def part(table):
            if table is None:
                return None
            return {"quiet_on_ood": table["quiet_on_ood"], "fire_more_on_ood": table["fire_more_on_ood"],
                    "network": table["network"], "notes": table["notes"],
                    "median_channel_auroc": float(np.median(table["channels"]["auroc"]))}

        return {
            "layer": self.layer, "at": self.at, "read": self.read,
            "in": self.names[0], "out": self.names[1], "n_in": self.n_in, "n_out": self.n_out,
            "definitions": {
                "id_threshold": f"the {ID_PERCENTILE:g}th percentile of each channel's spatial maxima on the "
                                "in-distribution set (so rate_in is ~5% by construction)",
                "auroc": "channel spatial maximum as a score for in-distribution; > 0.5: higher on ID",
                "quiet_on_ood": "bootstrap 95% interval of the AUROC entirely above 0.5",
                "fire_more_on_ood": "bootstrap 95% interval of the AUROC entirely below 0.5",
                "network_scores": "higher = more in-distribution; energy = logsumexp(logits); Mahalanobis on "
                                  "globally average-pooled layer features, shared covariance",
            },
            "trained": part(self.trained), "init": part(self.init), "channels": self.rows(),
            **({"data": self.data} if self.data is not None else {}),
        }


def shift(model: nn.Module, layer: str, in_images: Any, out_images: Any, *,
          train_images: Any = None, train_labels: Any = None, init_model: nn.Module | None = None,
          n_boot: int = 1000, seed: int = 0, batch_size: int = 64,
          names: tuple[str, str] = ("in", "out"), at: str = "activation", logits: bool = True,
          context: Context | None = None, workers: int = 0, checkpoint: Checkpoint | None = None) -> ShiftResult:
    """Per-channel and network-level shift between ``in_images`` and ``out_images`` at ``layer``.

    Parameters
    ----------
    model : nn.Module
    layer : str
        Dotted name of a layer with output (N, C, h, w).
    in_images, out_images : ndarray (N, C, H, W)
        Model inputs (normalised as the model expects).
    train_images, train_labels : ndarray, optional
        Labelled ID training images for the Mahalanobis score (skipped without them).
    init_model : nn.Module, optional
        The initialisation control, scored the same way (its own Mahalanobis fit).
    at : {"activation", "conv"}
        Read a conv ``layer`` after the nonlinearity that follows it, or its own output
        (:func:`~kernelscope.analysis.hooks.read_point`).
    logits : bool
        Whether the model's output is class logits (False for a descriptor or a score map:
        the softmax, logit and energy scores are then skipped, with a note).
    context, workers, checkpoint
        Sharding over ``torchrun`` ranks, folder workers, checkpoints
        (:func:`kernelscope.analysis.passes.run_pass`): per-image maxima, pooled features and logits
        are gathered in image order; the Mahalanobis fit merges per-class moments. ``in_images`` and
        ``out_images`` may then be image folders (the identical-set check needs arrays).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)); _ = net[0].bias.zero_()
    >>> rng = np.random.default_rng(0)
    >>> bright, dark = rng.uniform(0.5, 1, (30, 1, 4, 4)), rng.uniform(0, 0.5, (30, 1, 4, 4))
    >>> result = shift(net, "0", bright, dark, n_boot=100)
    >>> result.trained["quiet_on_ood"], result.trained["fire_more_on_ood"]
    ([0], [1])
    """
    in_src, out_src = as_images(in_images), as_images(out_images)
    arrays = in_src.inputs is not None and out_src.inputs is not None
    for name, src in (("in-distribution", in_src), ("out-of-distribution", out_src)):
        if src.shardable and len(src) == 0:
            raise KernelscopeError(f"the {name} set has no images (0 given); give at least one image")
    if arrays:
        in_array, out_array = in_src.inputs, out_src.inputs
        if in_array.shape[1:] != out_array.shape[1:]:
            raise KernelscopeError(
                f"in- and out-of-distribution images must have the same (C, H, W): got {in_array.shape[1:]} "
                f"and {out_array.shape[1:]}"
            )
        check_not_identical(in_array, out_array)
    hooked, read = read_point(model, layer, at)
    models = {"trained": model} if init_model is None else {"trained": model, "init": init_model}
    run = dict(context=context, batch_size=batch_size, workers=workers, checkpoint=checkpoint)

    def stats(src: Images, which: str) -> dict[str, dict[str, np.ndarray]]:
        reducers = {key: _Collect(net, hooked, logits=logits) for key, net in models.items()}
        report = run_pass(reducers, src, name=f"shift-{which}", desc=f"shift: {which}", **run)
        return {key: reducer.result(report) for key, reducer in reducers.items()}

    found_in, found_out = stats(in_src, names[0]), stats(out_src, names[1])
    maha: dict[str, Any] = {key: None for key in models}
    if train_images is not None and train_labels is not None:
        fits = {key: _ClassMoments(net, hooked, np.asarray(train_labels)) for key, net in models.items()}
        run_pass(fits, as_images(train_images), name="shift-fit", desc="shift: Mahalanobis fit", **run)
        maha = {key: fit.fit() for key, fit in fits.items()}
    reports = {key: shift_report(found_in[key], found_out[key], maha=maha[key], n_boot=n_boot, seed=seed)
               for key in models}
    maxima = {"in": found_in["trained"]["maxima"], "out": found_out["trained"]["maxima"]}
    if init_model is not None:
        maxima.update(init_in=found_in["init"]["maxima"], init_out=found_out["init"]["maxima"])
    data = {"in": found_in["trained"].get("data"), "out": found_out["trained"].get("data")}
    return ShiftResult(layer, len(maxima["in"]), len(maxima["out"]), reports["trained"], reports.get("init"),
                       maxima, tuple(names), at, read, data)
