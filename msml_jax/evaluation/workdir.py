"""Evaluating a trained run: what eval.py calls. Restore a checkpoint with the config it holds; evaluate it, draw
it, export it.

`python eval.py --workdir DIR` needs nothing else: the checkpoint holds the run's config (model, input size,
preprocessing, normalization). A config passed explicitly may change where data lies and how evaluation runs,
but not the model: fields that decide the network are compared with the checkpoint's and refused when they differ.
"""

import os

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from msml_jax import outputs, records, sharding
from msml_jax.checkpoint import check_model_fields, find_checkpoint, restore_checkpoint
from msml_jax.distances import COSINE
from msml_jax.errors import UserError
from msml_jax.evaluation.evaluator import SEPARATION_MAX_PAIRS, EvalSettings, Evaluator
from msml_jax.evaluation.protocols import get_protocol
from msml_jax.evaluation.report import format_table
from msml_jax.models import init_variables, model_from_config


def model_of(config, variables, where):
    """The model of `config` for restored `variables`; UserError when their shapes do not fit it."""
    params = traverse_util.flatten_dict(variables["params"], sep="/")
    kernel = next((v for k, v in params.items() if k.endswith("classifier/kernel")), None)
    if kernel is None:
        raise UserError(f"{where} holds no classifier parameters: it is not a checkpoint of this project's trainer")
    model = model_from_config(config, int(kernel.shape[-1]))
    shapes = jax.eval_shape(lambda: init_variables(model, tuple(config.data.image_size), jax.random.PRNGKey(0)))
    expected = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(dict(shapes), sep="/").items()}
    got = {k: tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(variables, sep="/").items()}
    if expected != got:
        diff = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
        shown = "; ".join(f"{k}: {got.get(k, 'absent')} saved, {expected.get(k, 'absent')} expected" for k in diff[:4])
        raise UserError(f"the parameters in {where} do not fit config.model ({config.model.name}): {shown}"
                        f"{' ...' if len(diff) > 4 else ''}: evaluate with the config the run was trained with")
    return model


def load_run(workdir, config=None, checkpoint="latest"):
    """(config, model, variables, step) of checkpoint `checkpoint` of `workdir`.

    `config` None: the checkpoint's own. Otherwise `config` is used, after checking that the fields deciding the
    network agree with the checkpoint's.
    """
    directory, step = find_checkpoint(workdir, checkpoint)
    where = os.path.join(directory, str(step))
    saved, variables = restore_checkpoint(directory, step)
    if config is None:
        config = ml_collections.ConfigDict(saved)
    else:
        check_model_fields(saved, config, where)
    return config, model_of(config, variables, where), variables, step


# Config fields eval.py sets with flags of its own (apply_eval_options): a fix is said with the flag.
EVAL_FLAGS = {"eval.k1": "--rerank_k1", "eval.k2": "--rerank_k2", "eval.lambda_value": "--rerank_lambda",
              "eval.rerank": "--rerank", "eval.flip": "--flip", "eval.metric": "--metric", "data.protocol": "--protocol",
              "data.eval": "--dataset"}


def apply_eval_options(config, datasets=None, protocol=None, flip=None, metric=None, rerank=None):
    """A copy of `config` with eval.py's options set (None: keep the config's)."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
        if "eval" not in config:
            config.eval = ml_collections.ConfigDict()
        if datasets:
            config.data.eval = tuple(datasets)
        if protocol is not None:
            config.data.protocol = protocol
        if flip is not None:
            config.eval.flip = bool(flip)
        if metric is not None:
            config.eval.metric = metric
        for field, value in (rerank or {}).items():  # eval.py's --rerank, --rerank_k1, --rerank_k2, --rerank_lambda
            if value is not None:
                config.eval[field] = value
    return config


def save_features(path, features):
    """Writes the features of every evaluated dataset to one `.npz` (atomically): `<dataset>/<query|gallery>/<field>`
    arrays.

    Fields: embeddings float32 [N, D], pids, camids and, when the dataset has them, tracklet and file_name.
    """
    arrays = {f"{name}/{part}/{field}": np.asarray(value) for name, parts in features.items()
              for part, values in parts.items() for field, value in values.items()}
    with outputs.atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: (v.astype(str) if v.dtype == object else v) for k, v in arrays.items()})


def evaluate_run(workdir, config=None, checkpoint="latest", datasets=None, protocol=None, flip=None, metric=None,
                 features_path=None, visualize_dir=None, export_path=None, rerank=None):
    """Evaluates a checkpoint of `workdir`; appends the records to its metrics.jsonl, prints and returns them.

    `features_path`: also write the features (`save_features`); `visualize_dir`: also draw each dataset's
    ranked lists and distance distributions and the run's training curves there (`draw_run`); `export_path`:
    export the embedder for serving (`export_run`), with the flip and metric options applied. Asked for alone
    (no features, no pictures), the export needs no evaluation: nothing is evaluated or recorded, [] is returned.
    """
    from msml_jax.config import as_typed, validate_config
    from msml_jax.data import load_eval_sets

    # Every output checked before anything is read or written; each written atomically, the records last.
    if features_path:
        outputs.check_file(features_path, "--save_features", ".npz")
    if export_path:
        outputs.check_file(export_path, "--export")
    if visualize_dir:
        outputs.check_folder(visualize_dir, "--visualize")
    config, model, variables, step = load_run(workdir, config, checkpoint)
    config = apply_eval_options(config, datasets, protocol, flip, metric, rerank)
    try:
        validate_config(config)
    except UserError as e:  # its fixes said with eval.py's own flags where it has them
        raise as_typed(e, EVAL_FLAGS) from None
    if export_path and not (features_path or visualize_dir):
        if jax.process_index() == 0:
            _export_atomically(export_path, model, variables, config, step)
            print(f"wrote {export_path} and {export_path}.json (step {step}; exported without evaluating: "
                  "run eval.py without --export for the table)", flush=True)
        return []
    eval_sets = load_eval_sets(config.data)
    mesh = sharding.make_mesh()
    evaluator = Evaluator(model.apply, eval_sets, EvalSettings.from_config(config, mesh.devices.size), mesh)
    features = evaluator.features(sharding.replicate(variables, mesh))
    results = [{**r, "checkpoint": str(checkpoint)} for r in evaluator.score(features, step)]
    if jax.process_index() == 0:
        written = []
        if features_path:
            save_features(features_path, features)
            written.append(features_path)
        if visualize_dir:
            with outputs.atomic_folder(visualize_dir) as folder:
                drawn = draw_run(folder, workdir, eval_sets, features, config, step)
            written += [os.path.join(visualize_dir, os.path.basename(path)) for path in drawn]
        if export_path:
            _export_atomically(export_path, model, variables, config, step)
            written += [export_path, export_path + ".json"]
        for record in results:
            records.append(workdir, record)
        print(format_table(results), flush=True)
        for path in written:
            print(f"wrote {path}", flush=True)
    return results


def draw_run(directory, workdir, eval_sets, features, config, step):
    """PNGs of an evaluated run in `directory`; returns their paths.

    Per dataset: `<dataset>_ranked.png` (the 8 queries of lowest AP, each with its top 10, green frame = same
    identity, red = another; one frame per tracklet for MARS) and `<dataset>_distances.png` (the paper's Figure
    3: positive and negative pair distances, margin marked); and `curves.png` from the run's metrics.jsonl.
    """
    from msml_jax.data.pipeline import image_reader
    from msml_jax.evaluation import visualize
    from msml_jax.evaluation.retrieval import distance_matrix

    os.makedirs(directory, exist_ok=True)
    settings = EvalSettings.from_config(config)
    paths = []
    for name, sets in eval_sets.items():
        q, g = features[name]["query"], features[name]["gallery"]
        read_q, read_g = image_reader(sets["query"]), image_reader(sets["gallery"])
        path = os.path.join(directory, f"{name}_ranked.png")
        # Ranked as the protocol ranks: against its items (MARS official: every test tracklet, queries included).
        items = get_protocol(sets["ranking"]).ranked_against(q, g)
        from_query = items.get("from_query", np.zeros(len(items["pids"]), bool))
        ids = (q["pids"], items["pids"], q["camids"], items["camids"])  # the pairs the records' figures count
        distances = distance_matrix(q["embeddings"], items["embeddings"], settings.metric, settings.normalize)
        visualize.ranked_lists(path, lambda i: read_q(q["image_index"][i]),
                               lambda i: (read_q if from_query[i] else read_g)(items["image_index"][i]),
                               distances, q["pids"], items["pids"], q["camids"], items["camids"],
                               title=f"{name}, step {step}: lowest-AP queries and their top 10")
        paths.append(path)
        path = os.path.join(directory, f"{name}_distances.png")
        visualize.embedding_distance_distributions(path, q["embeddings"], items["embeddings"], *ids,
                                                   metric=settings.metric, normalize=settings.normalize,
                                                   max_pairs=SEPARATION_MAX_PAIRS,  # as the record's figures
                                                   margin=config.get("margin"), title=f"{name}, step {step}")
        paths.append(path)
    metrics = records.metrics_path(workdir)
    if os.path.exists(metrics):
        paths.append(os.path.join(directory, "curves.png"))
        visualize.training_curves(paths[-1], metrics)
    return paths


def _export_atomically(path, model, variables, config, step):
    """`export_run` to `path` and `path.json`, each written under a temporary name and renamed."""
    with outputs.atomic_file(path) as tmp, outputs.atomic_file(path + ".json") as tmp_json:
        try:
            export_run(tmp, model, variables, config, step)  # writes tmp and tmp.json
            os.replace(tmp + ".json", tmp_json)
        finally:
            if os.path.exists(tmp + ".json"):
                os.remove(tmp + ".json")


def export_run(path, model, variables, config, step):
    """The run's embedder (`msml_jax.export`) at `path`: the evaluation's embeddings (raw, its flip test) and, in
    the JSON, its metric and whether that metric compares l2-normalized embeddings (`distances.comparable`)."""
    from msml_jax.export import export_embedder

    settings = EvalSettings.from_config(config)
    normalize = settings.normalize or settings.metric == COSINE
    return export_embedder(path, model.apply, variables, tuple(config.data.image_size), metadata={
        "flip": settings.flip, "normalize": normalize, "distance": settings.metric, "model": config.model.name,
        "step": int(step)})
