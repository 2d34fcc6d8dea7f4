"""The paper's recipe (Xiao, Luo, Zhang 2017, section 4.2) over its whole grid, as one parameterized config.

    python train.py --config configs/paper.py:market1501,resnet50,msml --workdir runs/market_r50_msml \
        --config.model.pretrained=/path/to/resnet50_imagenet.safetensors --config.data.manual_dir=/path/to/releases

DATASET in market1501 | mars | cuhk03 | cuhk_sysu | all (the union of the four, evaluated on each),
BACKBONE in resnet50 | inception_v2 | resnet50x, LOSS in cls | triplet | quadruplet | trihard | msml
(classification alone, or classification + that metric loss).

Recipe: 224 x 224 inputs; flip, shift, zoom, blur; batch 128 = P 32 identities x K 4 images; margins alpha = 0.3
(beta = 0.2 for quadruplet); l2-normalised 1024-d embeddings; Adam at 1e-3 for 50 epochs, 1e-4 for the next 150,
then 1e-5 (the paper gives no end: we stop 50 epochs into 1e-5, 250 epochs in all). Optional linear warmup:
--config.warmup_steps=N.

An epoch is every training identity drawn once: steps_per_epoch = num_train_ids // P, with the training
identity counts of the releases (TRAIN_IDS). Steps per epoch at P = 32:
    market1501   751 ids -> 23      mars       625 ids -> 19      cuhk03 (classic, labeled) 1367 ids -> 42
    cuhk_sysu   5532 ids -> 172     all       8275 ids -> 258
"""

from msml_jax.config_files import sibling_config

DATASETS = ("market1501", "mars", "cuhk03", "cuhk_sysu", "all")
BACKBONES = ("resnet50", "inception_v2", "resnet50x")
LOSSES = ("cls", "triplet", "quadruplet", "trihard", "msml")
# Training identities of each release under the paper's protocol (CUHK03: 1,467 minus the 100 test ids).
TRAIN_IDS = {"market1501": 751, "mars": 625, "cuhk03": 1367, "cuhk_sysu": 5532}
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
    train = tuple(TRAIN_IDS) if dataset == "all" else (dataset,)

    config.data.name = train[0]  # named in messages; the datasets are config.data.train
    config.data.train = train
    config.data.eval = train  # each evaluated in its own protocol
    config.data.image_size = (224, 224)
    config.data.flip = True
    config.data.shift = 0.1
    config.data.zoom = 0.1
    config.data.blur_prob = 0.5
    config.data.blur_sigma = 1.0

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
    steps_per_epoch = sum(TRAIN_IDS[name] for name in train) // config.P
    config.learning_rate = 1e-3
    config.lr_decay = 0.1
    config.lr_boundaries = (EPOCHS[0] * steps_per_epoch, (EPOCHS[0] + EPOCHS[1]) * steps_per_epoch)
    config.warmup_steps = 0
    config.num_train_steps = sum(EPOCHS) * steps_per_epoch

    config.log_every_steps = 50
    config.checkpoint_every_steps = 10 * steps_per_epoch
    config.eval_every_steps = 25 * steps_per_epoch
    config.eval_batch_size = 128
    return config
