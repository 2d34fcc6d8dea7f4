"""The small model on VIPeR (protocol trial 0: 316 identities for training, 316 cam_a queries vs cam_b gallery).

    python train.py --config configs/viper.py --workdir runs/viper \
        --config.data.data_dir=~/tensorflow_datasets --config.data.manual_dir=/path/to/VIPeR

The first run builds the TFDS dataset from the release in manual_dir (the VIPeR.v1.0.zip or its extracted
folder); later runs read data_dir only. The paper's augmentation: flip, shift, zoom, blur.
"""

from msml_jax.config_files import sibling_config


def get_config():
    config = sibling_config(__file__, "synthetic")
    config.data.name = "viper"
    config.data.image_size = (128, 64)
    config.data.shift = 0.1
    config.data.zoom = 0.1
    config.data.blur_prob = 0.5
    config.data.blur_sigma = 1.0
    # 316 identities with 2 images each: P x K = 32 x 2 keeps every batch full of positives.
    config.P, config.K, config.batch_size = 32, 2, 64
    config.num_train_steps = 300
    config.lr_boundaries = (200, 260)
    config.checkpoint_every_steps = 100
    return config
