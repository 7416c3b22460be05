"""OmegaConf resolvers the configs use; imported by the entry points before Hydra composes."""

import os

from omegaconf import OmegaConf


def _count_classes(data_dir: str) -> int:
    from mobilenet_lab.data.imagefolder import count_classes

    return count_classes(data_dir)


def _shard_classes(data_dir: str) -> int:
    from mobilenet_lab.data.shards import count_shard_classes

    return count_shard_classes(data_dir)


def _hf_classes(name: str, label_column: str | None, streaming: bool) -> int:
    from mobilenet_lab.data.hf import count_classes

    return count_classes(name, label_column, streaming)


OmegaConf.register_new_resolver("count_classes", _count_classes, replace=True)
OmegaConf.register_new_resolver("shard_classes", _shard_classes, replace=True)
OmegaConf.register_new_resolver("hf_classes", _hf_classes, replace=True)
OmegaConf.register_new_resolver("abspath", lambda path: os.path.abspath(path), replace=True)
