"""A sweep of user mistakes over every entry point: each is one `error:` line naming what was typed, exit code 2,
and leaves every path involved (workdir, data_dir, outputs, the trained run) byte for byte as it was.

train.py, eval.py and preview.py cases run in one process per entry point (tests/mistakes_driver.py resets absl's
flags between them), the reproduction driver's too, the Embedder's here; so the sweep costs a few imports, not one
per case. Each case: (command-line words, a substring the error line must hold). WORK, RUN, FILE, DIR, CFG... are
replaced by the fixture's paths.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from msml_jax.errors import UserError
from tests.conftest import ROOT, TINY_SYNTHETIC

TINY = [*(f"--config.data.synthetic.{k}={v}" for k, v in TINY_SYNTHETIC.items() if k != "image_size"),
        "--config.data.synthetic.image_size=(32, 16)", "--config.data.image_size=(32, 16)",
        "--config.model.embed_dim=16", "--config.P=4", "--config.K=2", "--config.batch_size=8",
        "--config.num_train_steps=6", "--config.lr_boundaries=(4,)", "--config.log_every_steps=2",
        "--config.checkpoint_every_steps=3", "--config.eval_batch_size=16"]
SYN = ["--config", "configs/synthetic.py"]

TRAIN = [
    (["--workdir", "WORK"], "--config"),
    (SYN, "--workdir"),
    (["--config", "NOFILE.py", "--workdir", "WORK"], "no such file"),
    (["--config", "DIR", "--workdir", "WORK"], "not a Python file"),
    (["--config", "CFG_SYNTAX", "--workdir", "WORK"], "syntax error at line 1"),
    (["--config", "CFG_NOGET", "--workdir", "WORK"], "has no get_config()"),
    (["--config", "CFG_NONE", "--workdir", "WORK"], "returned NoneType"),
    (["--config", "CFG_RAISES", "--workdir", "WORK"], "get_config() failed: ZeroDivisionError"),
    (["--config", "FILE", "--workdir", "WORK"], "not a Python file"),
    ([*SYN, "--workdir", "WORK", "--config.lerning_rate=0.1"], "did you mean config.learning_rate?"),
    ([*SYN, "--workdir", "WORK", "--config.P=abc"], "--config.P=abc"),
    ([*SYN, "--workdir", "WORK", "--config.learning_rate=fast"], "--config.learning_rate=fast"),
    ([*SYN, "--workdir", "WORK", "--config.data.flip=maybe"], "--config.data.flip=maybe"),
    ([*SYN, "--workdir", "WORK", "--config.lr_boundaries=(1,)", "--config.lr_boundaries=(3,)"], "given twice"),
    ([*SYN, "--workdir", "WORK", "--config.data.image_size=(32, 16)", "--config.data.image_size=(64, 32)"],
     "--config.data.image_size is given twice"),
    ([*SYN, "--workdir", "WORK", "extra"], "unexpected argument(s) extra"),
    ([*SYN, "--workdir", "WORK", "--unknownflag=1"], "unknownflag"),
    ([*SYN, "--workdir", "WORK", "--config.loss=foo"], "unknown loss 'foo'"),
    ([*SYN, "--workdir", "WORK", "--config.model.name=resnet9000"], "unknown model 'resnet9000'"),
    ([*SYN, "--workdir", "WORK", "--config.data.name=nope"], "unknown dataset 'nope'"),
    ([*SYN, "--workdir", "WORK", "--config.data.image_size=(8, 8)"], "smaller than the total stride 16"),
    ([*SYN, "--workdir", "WORK", "--config.P=1", "--config.batch_size=4"], "set config.P >= 2"),
    ([*SYN, "--workdir", "WORK", "--config.batch_size=63"], "must equal config.P * config.K"),
    ([*SYN, "--workdir", "WORK", "--config.loss=triplet", "--config.soft_margin=True"], "no soft-margin form"),
    ([*SYN, "--workdir", "WORK", "--config.margin=-1.0"], "config.margin must be"),
    ([*SYN, "--workdir", "WORK", "--config.learning_rate=0.0"], "config.learning_rate must be"),
    ([*SYN, "--workdir", "WORK", "--config.learning_rate=nan"], "got nan"),
    ([*SYN, "--workdir", "WORK", "--config.num_train_steps=-5"], "config.num_train_steps must be"),
    ([*SYN, "--workdir", "WORK", "--config.lr_boundaries=(650, 500)"], "increasing"),
    ([*SYN, "--workdir", "WORK", "--config.eval.k2=30"], "config.eval.k2=30 must be at most"),
    ([*SYN, "--workdir", "WORK", "--config.model.eval_embedding=bnneck"], "needs config.model.bnneck=True"),
    ([*SYN, "--workdir", "WORK", "--config.model.keras_style=True", "--config.model.name=resnet18"], "keras_style"),
    ([*SYN, "--workdir", "WORK", "--config.data.protocol=classic"], "not a protocol of"),
    ([*SYN, "--workdir", "WORK", "--config.data.train=('synthetic', 'synthetic')"], "names a dataset twice"),
    ([*SYN, "--workdir", "WORK", "--config.dtype=float16"], "config.dtype must be"),
    ([*SYN, "--workdir", "WORK", "--config.model.last_stride=3"], "config.model.last_stride must be"),
    ([*SYN, "--workdir", "WORK", "--config.data.trial=10"], "config.data.trial must be"),
    ([*SYN, "--workdir", "FILE"], "is a file, not a directory"),
    ([*SYN, "--workdir", "FILE/run"], "cannot be created"),
    ([*SYN, "--workdir", "WORK", "--config.data.name=viper", "--config.data.data_dir=FILE/tfds"], "cannot be created"),
    ([*SYN, "--workdir", "WORK", "--config.label_smoothing=1.0"], "config.label_smoothing must be"),
    ([*SYN, "--workdir", "WORK", "--config.model.dropout=1.0"], "config.model.dropout must be"),
    ([*SYN, "--workdir", "WORK", "--config.eval.metric=manhattan"], "config.eval.metric must be"),
    ([*SYN, "--workdir", "WORK", "--config.data.blur_prob=1.5"], "config.data.blur_prob must be"),
    ([*SYN, "--workdir", "WORK", "--config.data.synthetic.num_cameras=1"], "num_cameras must be"),
    ([*SYN, "--workdir", "WORK", "--config.model.preprocessing=rgb"], "config.model.preprocessing must be"),
    ([*SYN, "--workdir", "WORK", "--config.K=0"], "config.K must be"),
    ([*SYN, "--workdir", "WORK", "--config.seed=-1"], "config.seed must be"),
    (["--config", "configs/paper.py:mars,resnet50", "--workdir", "WORK"], "DATASET,BACKBONE,LOSS"),
    (["--config", "configs/paper.py:nope,resnet50,msml", "--workdir", "WORK"], "nope"),
    ([*SYN, "--workdir", "WORK", "--config.checkpoint_every_steps=0"], "config.checkpoint_every_steps=0"),
    ([*SYN, "--workdir", "WORK", "--config.warmup_steps=-1"], "config.warmup_steps must be"),
    ([*SYN, "--workdir", "WORK", "--config.eval.lambda_value=1.5"], "config.eval.lambda_value must be"),
    ([*SYN, "--workdir", "WORK", "--config.data.blur_sigma=0.0"], "config.data.blur_sigma must be"),
    ([*SYN, "--workdir", "WORK", "--config.max_checkpoints=0"], "config.max_checkpoints must be"),
    ([*SYN, "--workdir", "WORK", "--config.data.shift=1.0"], "config.data.shift must be"),
    ([*SYN, "--workdir", "WORK", *TINY, "--config.model.pretrained=NOFILE.safetensors"], "no such file"),
    ([*SYN, "--workdir", "RUNCOPY", *TINY, "--config.margin=0.5"], "config.margin"),
    ([*SYN, "--workdir", "LOCKED", *TINY, "--config.eval.flip=True"], "is in use by another training"),
    ([*SYN, "--workdir", "WORK", "--config.data.name=viper", "--config.data.data_dir=NEWDIR/tfds",
      "--config.data.manual_dir=NOFILE"], "manual directory"),
]

EVAL = [
    ([], "--workdir"),
    (["--workdir", "NOFILE"], "no checkpoint in"),
    (["--workdir", "DIR"], "no checkpoint in"),
    (["--workdir", "NOFILE*"], "matches no directory"),
    (["--workdir", "RUN", "--checkpoint", "999"], "--checkpoint=999"),
    (["--workdir", "RUN", "--checkpoint", "abc"], "--checkpoint=abc"),
    (["--workdir", "RUN", "--metric", "manhattan"], "manhattan"),
    (["--workdir", "RUN", "--rerank", "--rerank_k1=0"], "--rerank_k1=20"),
    (["--workdir", "RUN", "--rerank", "--rerank_k1=5000"], "--rerank_k1"),
    (["--workdir", "RUN", "--rerank", "--rerank_k2=30"], "--rerank_k2=30 must be at most"),
    (["--workdir", "RUN", "--rerank", "--rerank_lambda=2"], "--rerank_lambda="),
    (["--workdir", "RUN", "--dataset", "nope"], "unknown dataset 'nope' in --dataset"),
    (["--workdir", "RUN", "--protocol", "classic"], "not a protocol of"),
    (["--workdir", "RUN", "--save_features", "NOFILE/x.npz"], "does not exist"),
    (["--workdir", "RUN", "--save_features", "DIR"], "is a folder"),
    (["--workdir", "RUN", "--save_features", "OUT/features.txt"], "must end in .npz"),
    (["--workdir", "RUN", "--visualize", "FILE"], "is a file, not a folder"),
    (["--workdir", "RUN", "--visualize", "NOFILE/pictures"], "parent folder"),
    (["--workdir", "RUN", "--export", "DIR"], "is a folder"),
    (["--workdir", "RUN", "--export", "NOFILE/model.bin"], "does not exist"),
    (["--workdir", "RUN", "--config", "NOFILE.py"], "no such file"),
    (["--workdir", "RUN", *SYN, *(a for a in TINY if "embed_dim" not in a), "--config.model.embed_dim=32"],
     "decide the network"),
    (["--workdir", "RUN", "extra"], "unexpected argument(s) extra"),
    (["--workdir", "RUN", "--unknown=1"], "unknown"),
    (["--workdir", "RUN,RUN", "--save_features", "OUT/f.npz"], "--save_features takes one --workdir"),
    (["--workdir", "RUN", "--flip=maybe"], "flip"),
    (["--workdir", "RUN", *SYN, "--config.eval.k1=abc"], "--config.eval.k1=abc"),
    (["--workdir", "RUN", *SYN, "--config.lerning_rate=1"], "did you mean config.learning_rate?"),
    (["--workdir", "FILE"], "no checkpoint in"),
    (["--workdir", "RUN", "--config", "CFG_SYNTAX"], "syntax error"),
]

PREVIEW = [
    ([*SYN], "--out"),
    (["--out", "OUT/b.png"], "--config"),
    ([*SYN, "--out", "DIR"], "is a folder"),
    ([*SYN, "--out", "NOFILE/b.png"], "does not exist"),
    ([*SYN, "--out", "OUT/b.jpg"], "must end in .png"),
    ([*SYN, "--out", "OUT/b.png", "--step=-1"], "--step=-1: -1 is not an integer in the range"),
    ([*SYN, "--out", "OUT/b.png", "--num_images=0"], "--num_images=0: 0 is not an integer in the range"),
    ([*SYN, "--out", "OUT/b.png", "--per_row=0"], "--per_row=0: 0 is not an integer in the range"),
    ([*SYN, "--out", "OUT/b.png", "--scale=0"], "--scale=0: 0 is not an integer in the range"),
    ([*SYN, "--out", "OUT/b.png", "--scale=1000"], "--scale=1000: 1000 is not an integer in the range"),
    ([*SYN, "--out", "OUT/b.png", "--config.P=abc"], "--config.P=abc"),
    ([*SYN, "--out", "OUT/b.png", "--config.loss=foo"], "unknown loss 'foo'"),
    (["--config", "NOFILE.py", "--out", "OUT/b.png"], "no such file"),
    ([*SYN, "--out", "OUT/b.png", "extra"], "unexpected argument(s) extra"),
    ([*SYN, "--out", "OUT/b.png", "--step=abc"], "step"),
    ([*SYN, "--out", "FILE/b.png"], "is a file"),
]

REPRODUCE = [
    (["--dataset", "viper", "--splits", "9-10"], "--splits 9-10: viper has the splits 0-9"),
    (["--steps", "-5"], "--steps -5"),
    (["--seeds", "x"], "--seeds 'x'"),
    (["--seeds", ","], "--seeds ','"),
    (["--dataset", "nope"], "unknown dataset 'nope' in --dataset"),
    (["--losses", "foo"], "--losses 'foo'"),
    (["--losses", ","], "--losses ','"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--config", "NOFILE.py"], "no such file"),
    (["--set", "P=0"], "--set P=16"),
    (["--set", "nofield=1"], "nofield"),
    (["--set", "P"], "--set 'P'"),
    (["--image_size", "12x3"], "--image_size '12x3'"),
    (["--splits", "0-2"], "--splits is for"),
    (["--dataset", "viper", "--seeds", "0"], "use --splits"),
    (["--table_only", "--results", "NOFILE.jsonl"], "no results file"),
    (["--backbone", "nope"], "unknown model 'nope'"),
    (["--steps", "100", "--config", "configs/paper.py:market1501,resnet50,msml"], "in epochs"),
    (["--image_size", "8,8"], "smaller than the total stride"),
    (["--root", "FILE"], "is a file"),
    (["--config", "CFG_NOGET"], "has no get_config()"),
    (["--steps", "abc"], "--steps"),
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_flip_run):
    base = tmp_path_factory.mktemp("mistakes")
    p = {"WORK": str(base / "work"), "FILE": str(base / "afile"), "DIR": str(base / "adir"),
         "NOFILE": str(base / "nothing" / "here"), "OUT": str(base / "out"), "NEWDIR": str(base / "newdir"),
         "RUN": str(base / "run"), "RUNCOPY": str(base / "runcopy"), "LOCKED": str(base / "locked")}
    with open(p["FILE"], "w") as f:
        f.write("the user's file\n")
    os.makedirs(p["DIR"])
    os.makedirs(p["OUT"])
    # Copies of the session's trained run: a mistake that slipped through must not change the run other tests share.
    shutil.copytree(tiny_flip_run, p["RUN"])
    shutil.copytree(tiny_flip_run, p["RUNCOPY"])
    configs = {"CFG_SYNTAX": "def get_config(:\n    pass\n", "CFG_NOGET": "X = 1\n",
               "CFG_NONE": "def get_config():\n    return None\n", "CFG_RAISES": "def get_config():\n    return 1 / 0\n"}
    for name, text in configs.items():
        p[name] = str(base / f"{name.lower()}.py")
        with open(p[name], "w") as f:
            f.write(text)
    return p


def _fill(words, paths):
    out = []
    for word in words:
        for key in sorted(paths, key=len, reverse=True):
            word = word.replace(key, paths[key])
        out.append(word)
    return out


def _watched(paths):
    return [paths[k] for k in ("WORK", "FILE", "DIR", "OUT", "RUN", "RUNCOPY", "LOCKED", "NEWDIR")]


def _run_driver(entry, cases, paths, tmp_path, extra_setup=None):
    spec = {"entry": entry, "cases": [{"argv": _fill(words, paths), "watch": _watched(paths)} for words, _ in cases]}
    spec_path = tmp_path / f"{os.path.basename(entry)}.json"
    spec_path.write_text(json.dumps(spec))
    code = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path('tests/mistakes_driver.py', run_name='__main__')"
    if extra_setup:
        code = extra_setup + "; " + code
    result = subprocess.run([sys.executable, "-c", code, "tests/mistakes_driver.py", str(spec_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _check(entry, cases, results, paths):
    wrong = []
    for (words, expected), result in zip(cases, results):
        errors = [line for line in result["stderr"].splitlines() if line.startswith("error: ")]
        others = [line for line in result["stderr"].splitlines()
                  if line.strip() and not line.startswith(("error: ", "warning: ", "W", "I", "Downloading"))]
        problem = None
        if result["code"] != 2:
            problem = f"exit code {result['code']!r}"
        elif len(errors) != 1:
            problem = f"{len(errors)} error lines"
        elif expected not in errors[0]:
            problem = f"message lacks {expected!r}"
        elif result["changed"]:
            problem = "a watched path changed"
        elif any("Traceback" in line for line in others):
            problem = "a traceback"
        if problem:
            wrong.append(f"{entry} {' '.join(_fill(words, paths))}: {problem}\n    stderr: {result['stderr'][-600:]}")
    assert not wrong, f"{len(wrong)} of {len(cases)} cases wrong:\n" + "\n".join(wrong)


def _lock_held_by_this_process(paths):
    """LOCKED: a copy of the run whose lock is held by the driver process itself (alive)."""
    shutil.copytree(paths["RUN"], paths["LOCKED"], dirs_exist_ok=True)
    return ("import json, os, socket; from msml_jax import lock; "
            f"json.dump({{'host': socket.gethostname(), 'pid': os.getpid(), 'since': 'now', "
            f"'start_time': lock._start_time(os.getpid())}}, open({os.path.join(paths['LOCKED'], '.lock')!r}, 'w'))")


def test_train_py_mistakes(paths, tmp_path):
    results = _run_driver("train.py", TRAIN, paths, tmp_path, _lock_held_by_this_process(paths))
    _check("train.py", TRAIN, results, paths)
    assert not os.path.exists(paths["WORK"]) and not os.path.exists(paths["NEWDIR"])


def test_eval_py_mistakes(paths, tmp_path):
    _check("eval.py", EVAL, _run_driver("eval.py", EVAL, paths, tmp_path), paths)
    assert os.listdir(paths["OUT"]) == []


def test_preview_py_mistakes(paths, tmp_path):
    _check("preview.py", PREVIEW, _run_driver("preview.py", PREVIEW, paths, tmp_path), paths)
    assert os.listdir(paths["OUT"]) == []


def test_reproduction_driver_mistakes(paths, tmp_path):
    cases = [(words + (["--root", paths["WORK"]] if "--root" not in words else []) +
              (["--results", os.path.join(paths["OUT"], "r.jsonl")] if "--results" not in words else []), expected)
             for words, expected in REPRODUCE]
    _check("reproduce", cases, _run_driver("reproduce", cases, paths, tmp_path), paths)
    assert not os.path.exists(paths["WORK"]) and os.listdir(paths["OUT"]) == []


EMBEDDER = [
    ("from_workdir", lambda E, p: E.from_workdir(p["NOFILE"]), "no checkpoint in"),
    ("from_workdir empty", lambda E, p: E.from_workdir(p["DIR"]), "no checkpoint in"),
    ("from_workdir step", lambda E, p: E.from_workdir(p["RUN"], checkpoint=999), "--checkpoint=999"),
    ("missing image", lambda e, p: e.embed([p["NOFILE"] + ".jpg"]), "cannot read"),
    ("text as image", lambda e, p: e.embed([p["FILE"]]), "cannot read"),
    ("0x0 image", lambda e, p: e.embed([np.zeros((0, 0, 3), np.uint8)]), "no pixels"),
    ("2-D image", lambda e, p: e.embed([np.zeros((8, 8), np.uint8)]), "uint8 [h, w, 3]"),
    ("float image", lambda e, p: e.embed([np.zeros((8, 8, 3), np.float32)]), "uint8 [h, w, 3]"),
    ("5-D array", lambda e, p: e.embed(np.zeros((1, 2, 8, 8, 3), np.uint8)), "shape (1, 2, 8, 8, 3)"),
    ("empty gallery", lambda e, p: e.search(np.ones((2, 16)), np.zeros((0, 16))), "gallery is empty"),
    ("dims differ", lambda e, p: e.search(np.ones((2, 16)), np.ones((3, 8))), "16 dimensions, gallery ones 8"),
    ("k = 0", lambda e, p: e.search(np.ones((2, 16)), np.ones((3, 16)), k=0), "k=0"),
    ("1-D query", lambda e, p: e.search(np.ones(16), np.ones((3, 16))), "query embeddings must be"),
    ("NaN", lambda e, p: e.search(np.full((2, 16), np.nan), np.ones((3, 16))), "search:"),
]


def test_embedder_mistakes(paths):
    from msml_jax.inference import Embedder

    embedder = Embedder.from_workdir(paths["RUN"])
    wrong = []
    for name, call, expected in EMBEDDER:
        target = Embedder if name.startswith("from_workdir") else embedder
        try:
            call(target, paths)
            wrong.append(f"{name}: no error")
        except UserError as e:
            if expected not in str(e):
                wrong.append(f"{name}: {e}")
        except Exception as e:  # noqa: BLE001
            wrong.append(f"{name}: {type(e).__name__}: {e}")
    assert not wrong, "\n".join(wrong)
    # The legal edges: no image at all, and one path given alone (one image, not its characters).
    assert embedder.embed([]).shape == (0, embedder.embedding_dim) == (0, 16)
    image = os.path.join(paths["OUT"], "..", "one.png")
    from PIL import Image

    Image.fromarray(np.full((20, 10, 3), 128, np.uint8)).save(image)
    assert embedder.embed(image).shape == (1, 16)
    np.testing.assert_allclose(embedder.embed(image), embedder.embed([image]))
    assert len(TRAIN) + len(EVAL) + len(PREVIEW) + len(REPRODUCE) + len(EMBEDDER) >= 100
