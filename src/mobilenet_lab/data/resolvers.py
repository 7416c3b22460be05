"""OmegaConf resolvers the configs use; imported by the entry points before Hydra composes."""

import os

from omegaconf import OmegaConf


def _count_classes(data_dir: str) -> int:
    from mobilenet_lab.data.imagefolder import count_classes

    return count_classes(data_dir)


def _shard_classes(data_dir: str) -> int:
    from mobilenet_lab.data.shards import count_shard_classes

    return count_shard_classes(data_dir)


OmegaConf.register_new_resolver("count_classes", _count_classes, replace=True)
OmegaConf.register_new_resolver("shard_classes", _shard_classes, replace=True)
OmegaConf.register_new_resolver("abspath", lambda path: os.path.abspath(path), replace=True)
