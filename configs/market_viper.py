"""One model trained on Market-1501 and VIPeR together, evaluated on each in its own protocol.

    python train.py --config configs/market_viper.py --workdir runs/market_viper \
        --config.data.data_dir=~/tensorflow_datasets --config.data.manual_dir=/path/to/releases

manual_dir holds both releases (Market-1501-v15.09.15.zip or its folder, and VIPeR.v1.0.zip or its folder):
each builder finds its own. Identities are relabelled disjointly across the two training sets.
"""

from msml_jax.config_files import sibling_config


def get_config():
    config = sibling_config(__file__, "viper")
    config.data.name = "market1501"  # named in messages; the datasets are config.data.train
    config.data.train = ("market1501", "viper")
    config.P, config.K, config.batch_size = 16, 4, 64
    config.num_train_steps = 2000
    config.lr_boundaries = (1500, 1800)
    config.checkpoint_every_steps = 500
    return config
