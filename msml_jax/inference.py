"""Using a trained run: restore a checkpoint with the config it holds; evaluate it, draw it, export it, embed with it.

`python eval.py --workdir DIR` needs nothing else: the checkpoint holds the run's config (model, input size,
preprocessing, normalization). A config passed explicitly may change where data lies and how evaluation runs,
but not the model: fields that decide the network are compared with the checkpoint's and refused when they differ.
"""

import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from msml_jax import sharding
from msml_jax.errors import UserError
from msml_jax.evaluation.evaluator import SEPARATION_MAX_PAIRS, EvalSettings, Evaluator
from msml_jax.evaluation.report import format_table
from msml_jax.models import init_variables, model_from_config
from msml_jax.training.checkpoint import MODEL_FIELDS as TRAINED_MODEL_FIELDS
from msml_jax.training.checkpoint import config_differences

# Fields an evaluation config must share with the checkpoint's: those deciding the parameters (the trainer's
# list) and the input size the network was trained at.
MODEL_FIELDS = TRAINED_MODEL_FIELDS | {"data.image_size"}


def _manager(directory):
    return ocp.CheckpointManager(os.path.abspath(directory),
                                 options=ocp.CheckpointManagerOptions(create=False, cleanup_tmp_directories=False))


def find_checkpoint(workdir, which="latest"):
    """(directory, step) of checkpoint `which` of run `workdir`: "latest", "best" or a step number.

    Raises UserError naming the workdir and the steps there are when there is no such checkpoint.
    """
    which = str(which)
    directory = os.path.join(workdir, "best" if which == "best" else "checkpoints")
    steps = []
    if os.path.isdir(directory):
        manager = _manager(directory)
        steps = sorted(manager.all_steps())
        manager.close()
    if not steps:
        hint = ("no evaluation has kept a best checkpoint yet (config.eval_every_steps)" if which == "best" else
                f"train first with `python train.py --config CONFIG --workdir {workdir}`, or pass the --workdir "
                f"of a trained run")
        raise UserError(f"no checkpoint in {directory}: {hint}")
    if which in ("latest", "best"):
        return directory, steps[-1]
    if not which.isdigit() or int(which) not in steps:
        raise UserError(f"--checkpoint={which}: {directory} holds the steps {', '.join(map(str, steps))}: "
                        f"pass one of those, latest or best")
    return directory, int(which)


def restore_checkpoint(directory, step):
    """(config dict, {"params", "batch_stats"} of numpy arrays) saved at `step` in `directory`.

    A damaged checkpoint (an unreadable item, or bytes that do not match the sha256 recorded at saving) is a
    UserError naming it and the other steps to pick with --checkpoint.
    """
    from msml_jax.training.checkpoint import DamagedCheckpoint, restore_raw

    manager = _manager(directory)
    try:
        saved_config, state = restore_raw(manager, step)
    except DamagedCheckpoint as e:
        others = [str(s) for s in sorted(manager.all_steps(), reverse=True) if s != step]
        pick = (f"evaluate another one with --checkpoint {others[0]} (checkpoints present: {', '.join(others)})"
                if others else "there is no other checkpoint here: try --checkpoint best, or train again")
        raise UserError(f"the checkpoint {os.path.join(directory, str(step))} is damaged: {e}; {pick}") from None
    finally:
        manager.close()
    variables = {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
    return saved_config, jax.tree_util.tree_map(np.asarray, variables)


def check_model_fields(saved, config, where):
    """UserError naming each field deciding the network (`MODEL_FIELDS`) in which `config` differs from `saved`."""
    changed = [d for d in config_differences(saved, config) if d[0] in MODEL_FIELDS]
    if changed:
        listing = "; ".join(f"config.{field}: {old!r} in the checkpoint, {new!r} now" for field, old, new in changed)
        raise UserError(f"the config differs from the one the checkpoint in {where} was trained with in fields that "
                        f"decide the network ({listing}): drop those overrides (the checkpoint's config is used "
                        f"when --config is not given)")


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
    """Writes the features of every evaluated dataset to one `.npz`: `<dataset>/<query|gallery>/<field>` arrays.

    Fields: embeddings float32 [N, D], pids, camids and, when the dataset has them, tracklet and file_name.
    """
    arrays = {f"{name}/{part}/{field}": np.asarray(value) for name, parts in features.items()
              for part, values in parts.items() for field, value in values.items()}
    np.savez(path, **{k: (v.astype(str) if v.dtype == object else v) for k, v in arrays.items()})


def check_output_path(path, suffix):
    """UserError when `path` cannot be written: its folder does not exist, or it lacks `suffix`."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"cannot write {path}: the folder {folder} does not exist; create it or choose another path")
    if not path.endswith(suffix):
        raise UserError(f"{path}: the file name must end in {suffix}")


def evaluate_run(workdir, config=None, checkpoint="latest", datasets=None, protocol=None, flip=None, metric=None,
                 features_path=None, visualize_dir=None, export_path=None, rerank=None):
    """Evaluates a checkpoint of `workdir`; appends the records to its metrics.jsonl, prints and returns them.

    `features_path`: also write the features (`save_features`); `visualize_dir`: also draw each dataset's
    ranked lists and distance distributions and the run's training curves there (`draw_run`); `export_path`:
    also export the embedder for serving (`export_run`).
    """
    from msml_jax.data import load_eval_sets
    from msml_jax.training.writer import MetricWriter
    from msml_jax.config import validate_config

    if features_path:
        check_output_path(features_path, ".npz")
    if export_path:
        check_output_path(export_path, "")
    if visualize_dir and not os.path.isdir(os.path.dirname(os.path.abspath(visualize_dir))):
        raise UserError(f"--visualize={visualize_dir}: its parent folder does not exist; create it first")
    config, model, variables, step = load_run(workdir, config, checkpoint)
    config = apply_eval_options(config, datasets, protocol, flip, metric, rerank)
    validate_config(config)
    eval_sets = load_eval_sets(config.data)
    mesh = sharding.make_mesh()
    evaluator = Evaluator(model.apply, eval_sets, EvalSettings.from_config(config, mesh.devices.size), mesh)
    features = evaluator.features(sharding.replicate(variables, mesh))
    records = [{**r, "checkpoint": str(checkpoint)} for r in evaluator.score(features, step)]
    if jax.process_index() == 0:
        if features_path:
            save_features(features_path, features)
        writer = MetricWriter(workdir, tensorboard=False)
        for record in records:
            writer.write(record)
        print(format_table(records), flush=True)
        if visualize_dir:
            for path in draw_run(visualize_dir, workdir, eval_sets, features, config, step):
                print(f"wrote {path}", flush=True)
        if export_path:
            export_run(export_path, model, variables, config, step)
            print(f"wrote {export_path} and {export_path}.json", flush=True)
    return records


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
        ids = (q["pids"], g["pids"], q["camids"], g["camids"])
        read_q, read_g = image_reader(sets["query"]), image_reader(sets["gallery"])
        distances = distance_matrix(q["embeddings"], g["embeddings"], settings.metric, settings.normalize)
        path = os.path.join(directory, f"{name}_ranked.png")
        visualize.ranked_lists(path, lambda i: read_q(q["image_index"][i]), lambda i: read_g(g["image_index"][i]),
                               distances, *ids, title=f"{name}, step {step}: lowest-AP queries and their top 10")
        paths.append(path)
        path = os.path.join(directory, f"{name}_distances.png")
        visualize.embedding_distance_distributions(path, q["embeddings"], g["embeddings"], *ids,
                                                   metric=settings.metric, normalize=settings.normalize,
                                                   max_pairs=SEPARATION_MAX_PAIRS,  # as the record's figures
                                                   margin=config.get("margin"), title=f"{name}, step {step}")
        paths.append(path)
    metrics = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(metrics):
        paths.append(os.path.join(directory, "curves.png"))
        visualize.training_curves(paths[-1], metrics)
    return paths


def export_run(path, model, variables, config, step):
    """The run's embedder (`msml_jax.export`) at `path`, with the evaluation's flip and normalization."""
    from msml_jax.export import export_embedder

    settings = EvalSettings.from_config(config)
    normalize = settings.normalize or settings.metric == "cosine"
    return export_embedder(path, model.apply, variables, tuple(config.data.image_size), metadata={
        "flip": settings.flip, "normalize": normalize, "distance": settings.metric, "model": config.model.name,
        "step": int(step)})


class Embedder:
    """A trained run's embedding function on whatever device is present; needs JAX, not TensorFlow.

        embedder = Embedder.from_workdir("runs/demo")            # or checkpoint="best" | STEP
        gallery = embedder.embed(["a.jpg", "b.png"])             # files, or uint8 arrays of any size
        indices, distances = embedder.search(query, gallery, k=10)

    `embed` returns what evaluation ranks with (before normalization; the run's flip test applied), in batches;
    images are resized to the run's input size with bilinear interpolation (no antialiasing) and rounded, as the
    evaluation pipeline's tf.image.resize does. `search` ranks with the run's metric (l2-normalized Euclidean by
    default) and never holds a query x gallery matrix larger than one block.
    """

    def __init__(self, model, variables, config, step=None, batch_size=64):
        self.model, self.config, self.step, self.batch_size = model, config, step, batch_size
        self.settings = EvalSettings.from_config(config)
        self.variables = jax.device_put(variables)
        from msml_jax.evaluation.retrieval import embed_step

        self._embed = jax.jit(lambda v, x: embed_step(model.apply, v, x, flip=self.settings.flip))

    @classmethod
    def from_workdir(cls, workdir, checkpoint="latest", batch_size=64):
        config, model, variables, step = load_run(workdir, None, checkpoint)
        return cls(model, variables, config, step, batch_size)

    def _load(self, image):
        if isinstance(image, (str, os.PathLike)):
            from PIL import Image

            try:
                with Image.open(image) as im:
                    image = np.asarray(im.convert("RGB"))
            except (OSError, ValueError) as e:
                raise UserError(f"cannot read {image} as an image ({e}): pass image files or uint8 arrays") from e
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise UserError(f"an image must be uint8 [h, w, 3], got {image.dtype} {image.shape}")
        height, width = self.settings.image_size
        if image.shape[:2] == (height, width):
            return image
        resized = jax.image.resize(image.astype(np.float32), (height, width, 3), "bilinear", antialias=False)
        return np.asarray(np.clip(np.round(resized), 0, 255), np.uint8)

    def embed(self, images):
        """float32 [N, D] embeddings of `images` (a sequence of file paths or uint8 [h, w, 3] arrays, or [N, h, w,
        3]), in batches of `batch_size` padded to one shape (one compile)."""
        images = list(images)
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([self._load(im) for im in images[start: start + self.batch_size]])
            n = len(batch)
            if n < self.batch_size:
                batch = np.concatenate([batch, np.repeat(batch[:1], self.batch_size - n, 0)])
            out.append(np.asarray(self._embed(self.variables, batch))[:n])
        if not out:
            return np.zeros((0, 0), np.float32)
        return np.concatenate(out)

    def search(self, query_embeddings, gallery_embeddings, k=10):
        """(indices int [Q, k], distances float32 [Q, k]) of each query's k nearest gallery embeddings."""
        from msml_jax.evaluation.search import top_k
        from msml_jax.losses import l2_normalize

        q, g = (np.asarray(x, np.float32) for x in (query_embeddings, gallery_embeddings))
        if self.settings.metric == "euclidean" and self.settings.normalize:
            q, g = np.asarray(l2_normalize(q)), np.asarray(l2_normalize(g))
        return top_k(q, g, k, metric=self.settings.metric)
