"""Pictures of an evaluation: ranked lists, positive/negative distance distributions, training curves (PNG).

Drawn with matplotlib's object API on the Agg canvas (`matplotlib.figure.Figure`, no pyplot): no display
needed, and the process's global backend is left alone. Only numpy and matplotlib are imported.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from msml_jax.evaluation.ranking import evaluate_ranking
from msml_jax.evaluation.separation import pair_distances, separation_from_distances
from msml_jax.records import read as read_records

__all__ = [
    "MATCH_COLOUR",
    "MISMATCH_COLOUR",
    "per_query_ap",
    "ranked_gallery",
    "worst_queries",
    "ranked_lists",
    "distance_distributions",
    "embedding_distance_distributions",
    "training_curves",
]

MATCH_COLOUR = "#1a9641"  # green frame: same pid as the query
MISMATCH_COLOUR = "#d7191c"  # red frame: another identity (or a distractor)
_POS_COLOUR, _NEG_COLOUR = "#2c7bb6", "#fdae61"
# Query rows ranked at once when a whole distance matrix is given.
_ROW_BLOCK = 64


def _save(fig, path):
    FigureCanvasAgg(fig)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)


# ----------------------------------------------------------------------------------------------- ranked lists


def _rank_rows(distmat, rows, q_pids, g_pids, q_camids, g_camids):
    """Yields (row, gallery order with junk removed) for each query row, by ascending distance (stable)."""
    for s in range(0, len(rows), _ROW_BLOCK):
        block = np.asarray(rows[s:s + _ROW_BLOCK])
        order = np.argsort(np.asarray(distmat[block]), axis=1, kind="stable")
        for r, row_order in zip(block, order):
            junk = (g_pids[row_order] == q_pids[r]) & (g_camids[row_order] == q_camids[r])
            yield r, row_order[~junk]


def per_query_ap(distmat, q_pids, g_pids, q_camids, g_camids):
    """Average precision float64 [Q] of each query of a [Q, G] distance matrix (the ranking protocol's, as
    `evaluate_ranking` computes it: junk removed, AP = mean over the query's matches of precision at the match);
    NaN for a query without any match. ValueError when no query has a match."""
    return evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=1, per_query=True)["ap"]


def worst_queries(ap, num):
    """Indices of the `num` queries of lowest AP (ties: lower index first); NaN APs (no match) skipped."""
    ap = np.asarray(ap, np.float64)
    valid = np.flatnonzero(~np.isnan(ap))
    return valid[np.argsort(ap[valid], kind="stable")][:num]


def ranked_gallery(ranking, query, q_pids, g_pids, q_camids, g_camids, k):
    """The first `k` gallery entries shown for `query`, junk removed: (indices [<=k], distances [<=k], match bool).

    `ranking` is a [Q, G] distance matrix, or a (topk_indices [Q, K], topk_distances [Q, K]) pair listing each
    query's nearest entries in ranking order; its junk is dropped here, so K should exceed k by the most junk
    entries a query can have (its images from its own camera). `match`: same pid as the query.
    """
    if isinstance(ranking, tuple):
        idx = np.asarray(ranking[0][query])
        dist = np.asarray(ranking[1][query], np.float64)
        keep = ~((g_pids[idx] == q_pids[query]) & (g_camids[idx] == q_camids[query]))
        idx, dist = idx[keep][:k], dist[keep][:k]
    else:
        _, order = next(_rank_rows(ranking, [query], q_pids, g_pids, q_camids, g_camids))
        idx = order[:k]
        dist = np.asarray(ranking[query], np.float64)[idx]
    return idx, dist, g_pids[idx] == q_pids[query]


def _image(images, i):
    image = images(int(i)) if callable(images) else images[int(i)]
    return np.asarray(image)


def ranked_lists(path, query_images, gallery_images, ranking, q_pids, g_pids, q_camids, g_camids, *,
                 num_queries=8, query_indices=None, k=10, ap=None, title=None):
    """One row per query: the query image, then its top-k gallery images framed green (same pid) or red.

    Args:
        path: PNG to write.
        query_images, gallery_images: uint8 [N, h, w, 3] arrays, or callables index -> uint8 [h, w, 3] (read
            only for the images shown: e.g. one frame per MARS tracklet, loaded lazily).
        ranking: [Q, G] distances, or (topk_indices [Q, K], topk_distances [Q, K]) (see `ranked_gallery`), so
            a large gallery needs no Q x G matrix.
        q_pids, g_pids, q_camids, g_camids: integer ids.
        num_queries: rows drawn when `query_indices` is None: the queries of lowest AP first.
        query_indices: the queries to draw, in this order (overrides the AP choice).
        k: gallery images per row.
        ap: per-query AP [Q] (NaN: no match). Computed from a distance matrix when None; with top-k lists
            it is needed unless `query_indices` is given.
        title: figure title.

    Returns:
        list of one dict per row: query, ap (float or None), gallery (indices), distances, match (bools): what
        was drawn.
    """
    q_pids, g_pids, q_camids, g_camids = (np.asarray(a) for a in (q_pids, g_pids, q_camids, g_camids))
    topk = isinstance(ranking, tuple)
    if ap is None and not topk:
        ap = per_query_ap(ranking, q_pids, g_pids, q_camids, g_camids)
    if query_indices is None:
        if ap is None:
            raise ValueError("ranked_lists with top-k lists needs `ap` (per-query AP) to pick the worst queries, "
                             "or `query_indices`")
        query_indices = worst_queries(ap, num_queries)
    rows = []
    for q in query_indices:
        idx, dist, match = ranked_gallery(ranking, int(q), q_pids, g_pids, q_camids, g_camids, k)
        q_ap = None if ap is None or np.isnan(ap[q]) else float(ap[q])
        rows.append({"query": int(q), "ap": q_ap, "gallery": idx.tolist(), "distances": dist.tolist(),
                     "match": match.tolist()})
    if not rows:
        raise ValueError("no query to draw (every AP is NaN, or query_indices is empty)")

    cols = k + 2  # query, a spacer, k gallery images
    height = 2.35 * len(rows) + 0.6  # inches: rows, plus room for the title and the last row's labels
    fig = Figure(figsize=(1.05 * cols, height), dpi=90)
    grid = fig.add_gridspec(len(rows), cols, width_ratios=[1, 0.25] + [1] * k, wspace=0.08, hspace=0.45,
                            left=0.02, right=0.98, top=1 - 0.4 / height, bottom=0.45 / height)
    for r, row in enumerate(rows):
        q = row["query"]
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(_image(query_images, q))
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("black")
            spine.set_linewidth(2)
        ap_text = "AP n/a" if row["ap"] is None else f"AP {row['ap']:.3f}"
        ax.set_xlabel(f"q{q} id {q_pids[q]}\ncam {q_camids[q]} {ap_text}", fontsize=7)
        for c in range(k):
            ax = fig.add_subplot(grid[r, c + 2])
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row["gallery"]):
                ax.set_axis_off()
                continue
            g = row["gallery"][c]
            ax.imshow(_image(gallery_images, g))
            colour = MATCH_COLOUR if row["match"][c] else MISMATCH_COLOUR
            for spine in ax.spines.values():
                spine.set_color(colour)
                spine.set_linewidth(4)
            ax.set_xlabel(f"{row['distances'][c]:.3f}\nid {g_pids[g]}", fontsize=7)
    fig.suptitle(title or f"top-{k} gallery per query (green: same identity, red: another; junk removed)",
                 fontsize=9, y=1 - 0.1 / height, va="top")
    _save(fig, path)
    return rows


# -------------------------------------------------------------------------------- distance distributions


def distance_distributions(path, pos_distances, neg_distances, *, margin=None, title=None, figures=None):
    """Histograms (density) of positive- and negative-pair distances: the paper's Figure 3.

    Marked: the 95th percentile of positives, the 5th of negatives and, with `margin` (the loss's alpha),
    the band [p95(pos), p95(pos) + margin] that the loss asks negatives to lie beyond. The separation figures
    (`separation.separation_from_distances`, or the given `figures`) go in the title. Get the distances from
    embeddings with `separation.pair_distances` (or use `embedding_distance_distributions`).

    Returns the separation figures (dict).
    """
    pos = np.asarray(pos_distances, np.float64).reshape(-1)
    neg = np.asarray(neg_distances, np.float64).reshape(-1)
    figures = dict(figures) if figures is not None else separation_from_distances(pos, neg)
    bins = np.histogram_bin_edges(np.concatenate([pos, neg]), bins=60)
    fig = Figure(figsize=(7.5, 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.hist(neg, bins=bins, density=True, color=_NEG_COLOUR, alpha=0.65, label=f"negative pairs ({neg.size:,})")
    ax.hist(pos, bins=bins, density=True, color=_POS_COLOUR, alpha=0.65, label=f"positive pairs ({pos.size:,})")
    p95, p5 = np.percentile(pos, 95), np.percentile(neg, 5)
    ax.axvline(p95, color=_POS_COLOUR, linestyle="--", linewidth=1.5, label=f"positives' 95th pct. {p95:.3f}")
    ax.axvline(p5, color="#d95f02", linestyle="--", linewidth=1.5, label=f"negatives' 5th pct. {p5:.3f}")
    if margin is not None:
        ax.axvspan(p95, p95 + margin, color="grey", alpha=0.25, hatch="//",
                   label=f"margin {margin:g} past the positives' 95th pct.")
    ax.set_xlabel("distance")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, loc="upper left" if np.median(pos) > np.median(neg) else "upper right")
    head = f"{title}\n" if title else ""
    ax.set_title(f"{head}AUC {figures['auc']:.3f}   negatives closer than median positive "
                 f"{100 * figures['neg_closer_than_median_pos']:.1f}%   gap p5(neg) - p95(pos) "
                 f"{figures['gap_p95_p5']:+.3f}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return figures


def embedding_distance_distributions(path, query_emb, gallery_emb, q_pids, g_pids, q_camids, g_camids, *,
                                     margin=None, title=None, **pair_options):
    """`distance_distributions` of the test set's pairs (`separation.pair_distances` with `pair_options`:
    metric, normalize, max_pairs, seed). Returns the separation figures with the pair counts and `sampled`."""
    pos, neg, info = pair_distances(query_emb, gallery_emb, q_pids, g_pids, q_camids, g_camids, **pair_options)
    figures = {**separation_from_distances(pos, neg), **info}
    if info["sampled"]:
        title = f"{title + ' ' if title else ''}(sampled: {pos.size:,} of {info['num_pos_pairs']:,} positive, " \
                f"{neg.size:,} of {info['num_neg_pairs']:,} negative pairs)"
    distance_distributions(path, pos, neg, margin=margin, title=title, figures=figures)
    return figures


# ------------------------------------------------------------------------------------------ training curves


def _series(records, key):
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def _lines(ax, records, keys, ylabel, log=False):
    drawn = False
    for key in keys:
        steps, values = _series(records, key)
        if steps:
            ax.plot(steps, values, label=key, marker="." if len(steps) < 30 else None)
            drawn = True
    if not drawn:
        ax.text(0.5, 0.5, f"no {', '.join(keys)} in the records", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
        return
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def training_curves(path, metrics_jsonl_path):
    """Six panels of a run, against the step: loss terms, accuracy, learning rate (log), the mined hardest
    positive / negative distances, each evaluation's mAP (solid) and rank-1 (dashed) per dataset, images/s.

    The evaluation curves are the training's own evaluations: records written by eval.py (they carry a
    `checkpoint` key, with other settings: flip, re-ranking, another metric) are left out of the series and
    counted in the panel's title.

    Returns {"train_records", "eval_records", "bad_lines"}: counts (eval_records: those drawn), and the skipped
    lines (see records.read), which are also noted under the figure.
    """
    records, bad = read_records(metrics_jsonl_path)
    train = sorted((r for r in records if "dataset" not in r), key=lambda r: r["step"])
    evals = sorted((r for r in records if "dataset" in r and "checkpoint" not in r), key=lambda r: r["step"])
    later = sum(1 for r in records if "dataset" in r and "checkpoint" in r)
    fig = Figure(figsize=(13, 7.5), dpi=90)
    axes = fig.subplots(2, 3).ravel()
    _lines(axes[0], train, ["loss", "cls_loss", "metric_loss"], "loss")
    axes[0].set_title("losses", fontsize=10)
    _lines(axes[1], train, ["accuracy"], "training accuracy")
    axes[1].set_title("classification accuracy (train batch)", fontsize=10)
    _lines(axes[2], train, ["learning_rate"], "learning rate", log=True)
    axes[2].set_title("learning rate", fontsize=10)
    _lines(axes[3], train, ["hardest_pos", "hardest_neg"], "distance")
    axes[3].set_title("mined hardest positive / negative distance", fontsize=10)
    ax = axes[4]
    datasets = sorted({r["dataset"] for r in evals})
    for i, name in enumerate(datasets):
        records = [r for r in evals if r["dataset"] == name]
        colour = f"C{i % 10}"
        for key, style in (("mAP", "-"), ("rank1", "--")):
            steps, values = _series(records, key)
            ax.plot(steps, [100 * v for v in values], style, color=colour, marker="o", markersize=3,
                    label=f"{name} {key}")
    if datasets:
        ax.set_ylabel("%")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no evaluation records", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    ax.set_title("evaluation during training: mAP (solid), rank-1 (dashed)"
                 + (f"\n({later} eval.py record(s) not drawn)" if later else ""), fontsize=10)
    _lines(axes[5], train, ["images_per_sec"], "images / s")
    axes[5].set_title("training throughput", fontsize=10)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(os.path.abspath(metrics_jsonl_path), fontsize=9)
    if bad:
        fig.text(0.01, 0.005, f"skipped {len(bad)} unreadable line(s): " +
                 ", ".join(f"line {n} ({text!r})" for n, text in bad[:3]), fontsize=8, color=MISMATCH_COLOUR)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    _save(fig, path)
    return {"train_records": len(train), "eval_records": len(evals), "bad_lines": bad}
