"""CIFAR-10 and CIFAR-100 through torchvision's dataset classes (their on-disk format), held
in memory as uint8 tensors; a validation split is carved from train with a fixed seed."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import Tensor
from torchvision.datasets import CIFAR10, CIFAR100

from mobilenet_lab.data.batch_transforms import random_crop_flip, resize
from mobilenet_lab.data.in_memory import InMemoryDataModule
from mobilenet_lab.runs.errors import ConfigError

# name -> (torchvision class, classes, per-channel mean and std of the training images)
CIFAR = {
    "cifar10": (CIFAR10, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (CIFAR100, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _files_present(dataset: type[CIFAR10], root: Path) -> bool:
    folder = root / dataset.base_folder
    return all((folder / name).is_file() for name, _ in dataset.train_list + dataset.test_list)


def _class_names(dataset: type[CIFAR10], root: Path) -> list[str]:
    """The class names in the data set's meta file."""
    with open(root / dataset.base_folder / dataset.meta["filename"], "rb") as file:
        return pickle.load(file, encoding="latin1")[dataset.meta["key"]]


class _PresentFiles:
    """torchvision checks each file's md5 before loading; we check that the files exist, so
    that re-packed or trimmed copies (and the tests' small files) load too."""

    def _check_integrity(self) -> bool:
        return _files_present(type(self), Path(self.root))

    def _load_meta(self) -> None:
        self.classes = _class_names(type(self), Path(self.root))


class _CIFAR10(_PresentFiles, CIFAR10):
    pass


class _CIFAR100(_PresentFiles, CIFAR100):
    pass


LOADERS = {"cifar10": _CIFAR10, "cifar100": _CIFAR100}


class CIFARDataModule(InMemoryDataModule):
    """``name`` is ``cifar10`` or ``cifar100``. Training batches get the usual CIFAR
    augmentation (4-pixel padded random crop, horizontal flip), batched on the device;
    ``augment=False`` turns both off."""

    def __init__(
        self,
        name: str = "cifar10",
        data_dir: str = "data",
        download: bool = True,
        num_classes: int = 10,
        in_chans: int = 3,
        image_size: int = 32,
        batch_size: int = 128,
        val_size: int = 5000,
        split_seed: int = 0,
        padding: int = 4,
        flip: bool = True,
        augment: bool = True,
    ) -> None:
        if name not in CIFAR:
            raise ValueError(f"name={name!r} is not valid: use one of {sorted(CIFAR)}")
        dataset, classes, self.mean, self.std = CIFAR[name]
        if (num_classes, in_chans) != (classes, 3):
            raise ValueError(
                f"num_classes={num_classes}, in_chans={in_chans} do not fit {name}: it has "
                f"{classes} classes of 3-channel images"
            )
        super().__init__(image_size, batch_size, num_classes, in_chans, augment)
        self.save_hyperparameters()
        root = Path(data_dir)
        if _files_present(dataset, root):  # known before set-up: a teacher's are checked
            self.classes = tuple(_class_names(dataset, root))
        elif not download:
            raise ConfigError(self._missing_files_message(dataset, root))

    def _missing_files_message(self, dataset: type[CIFAR10], root: Path) -> str:
        return (
            f"data_dir={str(root)!r}: no {self.hparams.name} files in "
            f"{root / dataset.base_folder} (data.download=false). Run once with "
            f"data.download=true on a machine with internet, or unpack {dataset.filename} "
            f"from {dataset.url} into {root}"
        )

    def prepare_data(self) -> None:
        dataset, root = CIFAR[self.hparams.name][0], Path(self.hparams.data_dir)
        if self.hparams.download and not _files_present(dataset, root):
            try:
                dataset(root, download=True)
            except OSError as error:  # offline: URLError and friends
                reason = str(getattr(error, "reason", error)).strip("<>")
                raise ConfigError(
                    f"data.download=true: downloading {dataset.filename} from {dataset.url} "
                    f"into {root} failed ({reason}): run on a machine with internet, or unpack "
                    f"that archive into {root} yourself"
                ) from error

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        hp = self.hparams
        loader = LOADERS[hp.name]
        train = loader(hp.data_dir, train=True)
        test = loader(hp.data_dir, train=False)
        images = torch.from_numpy(train.data).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor(train.targets, dtype=torch.long)
        if not 0 < hp.val_size < len(labels):
            raise ConfigError(
                f"data.val_size={hp.val_size} is not valid: use 1 to {len(labels) - 1} "
                f"(the training set has {len(labels)} images)"
            )
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(hp.split_seed))
        val, rest = order[: hp.val_size], order[hp.val_size :]
        self.classes = tuple(train.classes)
        test_images = torch.from_numpy(test.data).permute(0, 3, 1, 2).contiguous()
        return {
            "train": (images[rest], labels[rest]),
            "val": (images[val], labels[val]),
            "test": (test_images, torch.tensor(test.targets, dtype=torch.long)),
        }

    def random_augmentation(self) -> str | None:
        hp = self.hparams
        if not self.augmenting:
            return None
        changing = [f"data.padding={hp.padding}"] * bool(hp.padding) + ["data.flip=true"] * hp.flip
        return " ".join(changing) or None

    def augment(self, images: Tensor) -> Tensor:
        images = random_crop_flip(images, self.hparams.padding, self.hparams.flip)
        return resize(images, self.image_size)
