"""MSML on the built-in synthetic benchmark: a small ResNet, trained on 2 CPU cores in a few minutes.

    python train.py --config configs/synthetic.py --workdir runs/demo
    python train.py --config configs/synthetic.py --workdir runs/trihard --config.loss=trihard
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0  # parameters, PK sampling, augmentation, random pairs

    config.data = ml_collections.ConfigDict()
    config.data.name = "synthetic"
    config.data.seed = 0  # the benchmark itself, fixed across training seeds
    config.data.synthetic = ml_collections.ConfigDict(
        dict(num_train_ids=300, num_test_ids=100, num_distractors=100, num_cameras=4, image_size=(64, 32))
    )
    config.data.image_size = (64, 32)  # network input (height, width)
    config.data.flip = True
    config.data.shift = 0.1  # fraction of height / width
    # The rest of the paper's augmentation (msml_jax/data/augment.py), off in the demo.
    config.data.zoom = 0.0  # scale uniform in [1 - zoom, 1 + zoom]
    config.data.blur_prob = 0.0  # probability of a Gaussian blur per image
    config.data.blur_sigma = 1.0  # largest blur std in pixels
    config.data.erase_prob = 0.0  # random erasing (Zhong et al.), an option beyond the paper
    config.data.augment_on_device = False  # True: blur and erasing run in the train step, on the accelerator
    # Real datasets (TFDS builders in msml_jax/data/builders): set name, or train = a tuple trained on together.
    config.data.train = ()  # () = (config.data.name,); e.g. ("market1501", "viper")
    config.data.eval = ()  # datasets evaluated, each in its own protocol; () = those trained on
    config.data.data_dir = "~/tensorflow_datasets"  # TFDS data_dir of the prepared datasets
    config.data.manual_dir = ""  # where the official releases lie; "" = <data_dir>/downloads/manual
    config.data.skip_corrupt = False  # skip (and count) unreadable images instead of stopping
    config.data.trial = 0  # VIPeR / PRID2011: which of the 10 random protocol splits
    config.data.protocol = ""  # "" = each dataset's default; cuhk03: new | classic (msml_jax.data.PROTOCOLS)

    config.model = ml_collections.ConfigDict()
    config.model.name = "small_resnet"
    config.model.embed_dim = 128
    config.model.last_stride = 2
    config.model.pretrained = ""  # ImageNet weights: torchvision .safetensors/.pth or Keras ResNet50 .h5; "" = scratch
    config.model.keras_style = False  # ResNet laid out as keras.applications (needed for Keras .h5 weights)
    config.model.preprocessing = "auto"  # imagenet (RGB mean/std) | caffe (BGR mean) | bninception (pretrainedmodels BN-Inception) | auto: caffe iff keras_style
    config.model.bnneck = False  # BatchNorm between embedding and (bias-free) classifier
    config.model.dropout = 0.0  # on the classifier's input
    config.model.eval_embedding = "embedding"  # what evaluation ranks with: embedding | bnneck | features
    config.dtype = "float32"

    # Loss: classification + the paper's MSML (eq. 5), alpha = 0.3.
    config.loss = "msml"  # cls | triplet | quadruplet | trihard | msml
    config.margin = 0.3  # alpha
    config.beta = 0.2  # quadruplet's second margin
    config.soft_margin = False
    config.normalize = True  # l2-normalise embeddings before distances, as the paper does
    config.cls_weight = 1.0
    config.label_smoothing = 0.0

    # PK batches: P identities x K images.
    config.P = 16
    config.K = 4
    config.batch_size = 64

    # Adam with a step schedule: the paper's 1e-3 -> 1e-4 -> 1e-5 shape, compressed into a
    # CPU budget with a higher start (1e-3 reached mAP 0.32 in 600 steps, 3e-3 reached 0.65 in 700).
    config.learning_rate = 3e-3
    config.lr_boundaries = (500, 650)
    config.lr_decay = 0.1
    config.warmup_steps = 0  # linear warmup over the first steps; 0: none
    config.num_train_steps = 700
    # A schedule in epochs instead (configs/paper.py): each sets its step field from the loaded training split
    # (epoch = num_train_ids // P steps) when that step field is 0 / empty (msml_jax/training/schedule.py).
    config.num_train_epochs = 0
    config.lr_boundary_epochs = ()
    config.checkpoint_every_epochs = 0
    config.eval_every_epochs = 0

    config.log_every_steps = 20
    config.checkpoint_every_steps = 200
    config.max_checkpoints = 3
    config.eval_every_steps = 350  # periodic evaluation (keeps the best checkpoint by mAP; ~2 s each); 0: start and end
    config.allow_config_change = False  # resuming with a config that differs from the checkpoint's is refused
    config.eval_batch_size = 128

    # How evaluation embeds and ranks (train.py's evaluations and eval.py's defaults).
    config.eval = ml_collections.ConfigDict()
    config.eval.flip = False  # flip test: average the embeddings of each image and its mirror
    config.eval.metric = "euclidean"  # euclidean (of l2-normalized embeddings when config.normalize) | cosine
    config.eval.pooling = "avg"  # tracklet datasets (MARS): avg | max of the frame features
    config.eval.rerank = False  # k-reciprocal re-ranking (Zhong et al. 2017) of the query x gallery distances
    config.eval.k1 = 20  # its k1 (k-reciprocal neighbours), at most the gallery size
    config.eval.k2 = 6  # its k2 (local query expansion; 1: none), in [1, k1]
    config.eval.lambda_value = 0.3  # weight of the original distance, in [0, 1]
    return config
