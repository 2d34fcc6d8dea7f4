"""The paper's recipe (Xiao, Luo, Zhang 2017, section 4.2) over its whole grid, as one parameterized config.

    python train.py --config configs/paper.py:market1501,resnet50,msml --workdir runs/market_r50_msml \
        --config.model.pretrained=/path/to/resnet50_imagenet.safetensors --config.data.manual_dir=/path/to/releases

DATASET in market1501 | mars | cuhk03 | cuhk_sysu | all (the union of the four, evaluated on each); also
dukemtmc_reid | msmt17: the same recipe on the image benchmarks re-ID reports today (not in the paper, not in `all`),
BACKBONE in resnet50 | inception_v2 | resnet50x, LOSS in cls | triplet | quadruplet | trihard | msml
(classification alone, or classification + that metric loss).

Recipe: 224 x 224 inputs; flip, shift, zoom, blur; batch 128 = P 32 identities x K 4 images; margins alpha = 0.3
(beta = 0.2 for quadruplet); l2-normalised 1024-d embeddings; Adam at 1e-3 for 50 epochs, 1e-4 for the next 150,
then 1e-5 (the paper gives no end: we stop 50 epochs into 1e-5, 250 epochs in all). Optional linear warmup:
--config.warmup_steps=N.

The schedule is in epochs (num_train_epochs, lr_boundary_epochs, ...): an epoch is every training identity drawn
once, steps_per_epoch = num_train_ids // P, counted from the training split actually loaded
(msml_jax/training/schedule.py). With the official releases at P = 32 that is: market1501 751 ids -> 23 steps,
mars 625 -> 19, cuhk03 (classic, labeled) 1,367 -> 42, cuhk_sysu 5,532 -> 172, all 8,275 -> 258, dukemtmc_reid
702 -> 21, msmt17 1,041 -> 32 (its list_train + list_val). A step field
given on the command line (e.g. --config.num_train_steps=10) wins over its epoch field.

CUHK03 is trained and evaluated in the classic protocol the paper used (1,367 training / 100 test identities,
single-gallery-shot CMC over 10 draws): config.data.protocol = "classic" ("new" for the 767 / 700 protocol).
"""

from msml_jax.config_files import sibling_config

PAPER_DATASETS = ("market1501", "mars", "cuhk03", "cuhk_sysu")  # the paper's union, `all`
DATASETS = (*PAPER_DATASETS, "all", "dukemtmc_reid", "msmt17")
BACKBONES = ("resnet50", "inception_v2", "resnet50x")
LOSSES = ("cls", "triplet", "quadruplet", "trihard", "msml")
EPOCHS = (50, 150, 50)  # at 1e-3, 1e-4, 1e-5


def _parse(arg):
    parts = [p.strip() for p in (arg or "market1501,resnet50,msml").split(",")]
    if len(parts) != 3:
        raise ValueError(
            f"configs/paper.py:{arg}: expected DATASET,BACKBONE,LOSS, e.g. configs/paper.py:market1501,resnet50,msml"
        )
    for value, valid, what in zip(parts, (DATASETS, BACKBONES, LOSSES), ("dataset", "backbone", "loss")):
        if value not in valid:
            raise ValueError(f"configs/paper.py:{arg}: unknown {what} {value!r}: valid are {', '.join(valid)}")
    return parts


def get_config(arg=None):
    dataset, backbone, loss = _parse(arg)
    config = sibling_config(__file__, "synthetic")
    train = PAPER_DATASETS if dataset == "all" else (dataset,)

    config.data.name = train[0]  # named in messages; the datasets are config.data.train
    config.data.train = train
    config.data.eval = train  # each evaluated in its own protocol
    config.data.image_size = (224, 224)
    config.data.flip = True
    config.data.shift = 0.1
    config.data.zoom = 0.1
    config.data.blur_prob = 0.5
    config.data.blur_sigma = 1.0
    config.data.protocol = "classic" if "cuhk03" in train else ""

    config.model.name = backbone
    config.model.embed_dim = 1024
    config.model.last_stride = 2
    config.model.pretrained = ""  # ImageNet weights file of the backbone (the paper starts from ImageNet)

    config.loss = loss
    config.margin = 0.3
    config.beta = 0.2
    config.normalize = True
    config.cls_weight = 1.0

    config.P, config.K, config.batch_size = 32, 4, 128
    config.learning_rate = 1e-3
    config.lr_decay = 0.1
    config.warmup_steps = 0
    # In epochs, turned into steps from the loaded training split; the step fields stay 0 / empty for that.
    config.num_train_epochs = sum(EPOCHS)
    config.lr_boundary_epochs = (EPOCHS[0], EPOCHS[0] + EPOCHS[1])
    config.checkpoint_every_epochs = 10
    config.eval_every_epochs = 25
    config.num_train_steps, config.lr_boundaries = 0, ()
    config.checkpoint_every_steps, config.eval_every_steps = 0, 0

    config.log_every_steps = 50
    config.eval_batch_size = 128
    return config
