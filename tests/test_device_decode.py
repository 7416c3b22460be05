"""``data.decode=gpu`` (issue 30, item 3) on the CPU device, where the same code runs as on a
GPU with nvJPEG: its eval batches match the PIL path's, its training batches follow the
augmentation settings, non-JPEG images are decoded on the CPU and counted, a run trains, and
what it cannot do is refused at start-up."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet_lab.data import device_decode
from mobilenet_lab.data.encoded import IMAGENET_STD
from mobilenet_lab.data.imagefolder import ImageFolderDataModule
from mobilenet_lab.jobs.startup_checks import check_train_config
from mobilenet_lab.runs.errors import ConfigError
from mobilenet_lab.train import train

# PIL and torchvision decode with the same libjpeg-turbo here and torchvision's antialiased
# resize is made to match Pillow's: eval pixels differ by at most one 8-bit level (docs/data.md)
LEVEL = 1.0001 / 255 / min(IMAGENET_STD)  # one 8-bit level, normalised by the smallest std
EVAL_TOLERANCE = LEVEL
# nvJPEG's inverse DCT is not libjpeg's: a bound, until a GPU run measures it (it prints it)
NVJPEG_TOLERANCE = 4 * LEVEL
SIZES = [(120, 90), (90, 120), (101, 77), (64, 64)]  # landscape, portrait, odd, square


def write_jpegs(root: Path, classes: int = 2) -> Path:
    """``train/`` and ``val/`` of smooth JPEGs of several shapes (noise would be a harsher test
    of the resize than photographs are)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i, size in enumerate(SIZES):
                small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
                Image.fromarray(small).resize(size, Image.BILINEAR).save(folder / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jpegs(tmp_path_factory.mktemp("jpegs"))


def batch_of(
    root: Path, training: bool, split: str = "val", device: str = "cpu", **settings
) -> tuple:
    """The first batch of ``split`` as the training step gets it on ``device``."""
    settings = {"image_size": 32, "batch_size": 8, "num_workers": 0, **settings}
    dm = ImageFolderDataModule(str(root), num_classes=2, **settings)
    dm.trainer = SimpleNamespace(training=training, world_size=1)
    dm.setup()
    loader = dm._loader(split, training=training, shuffle=False)
    batch = dm.transfer_batch_to_device(next(iter(loader)), torch.device(device), 0)
    return (*dm.on_after_batch_transfer(batch, 0), dm)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_eval_batches_match_the_pil_path(jpegs: Path, interpolation: str) -> None:
    pil, pil_labels, _ = batch_of(jpegs, False, decode="cpu", interpolation=interpolation)
    gpu, gpu_labels, _ = batch_of(jpegs, False, decode="gpu", interpolation=interpolation)
    assert gpu.shape == pil.shape == (8, 3, 32, 32) and gpu.dtype == torch.float32
    assert torch.equal(gpu_labels, pil_labels)
    difference = (gpu - pil).abs()
    assert difference.max() <= EVAL_TOLERANCE
    assert difference.mean() < 0.01 * EVAL_TOLERANCE  # almost every pixel the same


def test_training_batches_follow_the_augmentation_settings(jpegs: Path, monkeypatch) -> None:
    plain = {"decode": "gpu", "color_jitter": 0.0, "hflip": 0.0}
    eval_batch, *_ = batch_of(jpegs, False, "train", **plain)
    unaugmented, *_ = batch_of(jpegs, True, "train", **plain, augment=False)
    assert torch.equal(unaugmented, eval_batch)  # augment=false: the eval transform

    crops = []
    resized_crop = device_decode.F.resized_crop

    def recording(image, top, left, height, width, *args, **kwargs):
        crops.append((height * width / (image.shape[-2] * image.shape[-1]), width / height))
        return resized_crop(image, top, left, height, width, *args, **kwargs)

    monkeypatch.setattr(device_decode.F, "resized_crop", recording)
    torch.manual_seed(0)
    kept, *_ = batch_of(jpegs, True, "train", **plain)
    torch.manual_seed(0)
    mirrored, *_ = batch_of(jpegs, True, "train", **{**plain, "hflip": 1.0})
    assert torch.equal(mirrored, kept.flip(-1))  # the same crops, each mirrored
    assert len(crops) == 16 and not torch.equal(kept, eval_batch)
    for area, ratio in crops:  # RandomResizedCrop's bounds (rounding to whole pixels aside)
        assert 0.08 * 0.8 <= area <= 1 and 3 / 4 * 0.9 <= ratio <= 4 / 3 * 1.1

    torch.manual_seed(0)
    jittered, *_ = batch_of(jpegs, True, "train", **{**plain, "color_jitter": 0.4})
    assert not torch.equal(jittered, kept)
    erased, *_ = batch_of(jpegs, True, "train", **plain, re_prob=1.0)
    assert all((image == 0).all(dim=0).sum() > 0 for image in erased)  # a rectangle of mean


def test_non_jpeg_is_decoded_on_the_cpu_and_counted(tmp_path: Path) -> None:
    root = write_jpegs(tmp_path / "tree")
    folder = root / "val" / "class_0"
    Image.open(folder / "0.jpg").save(folder / "0.png")
    Image.open(folder / "1.jpg").convert("L").save(folder / "1.jpg")  # grey JPEG: to RGB
    Image.open(folder / "2.jpg").convert("CMYK").save(folder / "2.jpg")  # CMYK JPEG: to RGB
    (folder / "3.jpg").write_bytes((folder / "3.jpg").read_bytes()[:200])  # truncated
    settings = {"batch_size": 16}
    pil, pil_labels, _ = batch_of(root, False, **settings)
    gpu, labels, dm = batch_of(root, False, decode="gpu", **settings)
    assert gpu.shape == (len(labels), 3, 32, 32) == (len(pil_labels), 3, 32, 32)
    for i in (1, 2):  # sorted: 0.jpg, 0.png, 1.jpg (grey), 2.jpg (CMYK), 3.jpg (truncated)
        assert (gpu[i] - pil[i]).abs().max() <= EVAL_TOLERANCE
    assert dm.decoded_on_cpu.total == 1  # the PNG
    (bad,) = dm.bad_files  # the truncated JPEG: replaced, so that the batch stays full
    assert bad.startswith("<200 bytes> (not a readable image")
    with pytest.warns(UserWarning, match=r"data.decode=gpu: 1 image\(s\) of this pass were "):
        dm.teardown("fit")


def test_a_run_trains_with_decode_gpu_on_the_cpu(make_cfg, jpegs: Path, tmp_path: Path) -> None:
    overrides = ["data=imagefolder", f"data.data_dir={jpegs}", "data.decode=gpu",
                 "data.image_size=32", "data.num_workers=0", "data.batch_size=4", "trainer=cpu",
                 "debug=limit", "model.alpha=0.25", "trainer.max_epochs=1",
                 "trainer.enable_progress_bar=false", "~callbacks.model_summary"]  # fmt: skip
    report = train(make_cfg("train", overrides, tmp_path / "run"))
    assert report["data"] == "imagefolder" and 0 <= report["test"]["test/acc"] <= 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.auto_augment=rand-m9-mstd0.5"], "data.auto_augment='rand-m9-mstd0.5' runs on PIL"),
        (["data.interpolation=lanczos"], "data.interpolation='lanczos' has no resize on the dev"),
    ],
)
def test_what_the_device_cannot_do_is_refused(make_cfg, jpegs, overrides, message) -> None:
    cfg = make_cfg("train", ["data=imagefolder", f"data.data_dir={jpegs}", "data.decode=gpu",
                             "trainer=cpu", *overrides])  # fmt: skip
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        check_train_config(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="refused only without CUDA")
def test_decode_gpu_on_a_gpu_accelerator_without_cuda(run_main, jpegs, tmp_path: Path) -> None:
    result = run_main("src/train.py", "data=imagefolder", f"data.data_dir={jpegs}",
                      "data.decode=gpu", "trainer.accelerator=gpu",
                      f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "data.decode=gpu with trainer.accelerator=gpu but this machine has no CUDA" in line
    assert not any(tmp_path.iterdir()), "a run folder was created"


@pytest.mark.gpu
def test_nvjpeg_eval_batches_match_the_pil_path(jpegs: Path, capsys) -> None:
    pil, pil_labels, _ = batch_of(jpegs, False, decode="cpu")
    gpu, labels, _ = batch_of(jpegs, False, device="cuda", decode="gpu")
    assert gpu.is_cuda and torch.equal(labels.cpu(), pil_labels)
    difference = (gpu.cpu() - pil).abs() / LEVEL
    with capsys.disabled():
        print(f"\nnvJPEG vs PIL eval batch: max {difference.max():.2f} levels, mean "
              f"{difference.mean():.4f}")  # fmt: skip
    assert difference.max() <= NVJPEG_TOLERANCE / LEVEL


@pytest.mark.gpu
def test_a_run_trains_with_decode_gpu_on_a_gpu(make_cfg, jpegs: Path, tmp_path: Path) -> None:
    overrides = ["data=imagefolder", f"data.data_dir={jpegs}", "data.decode=gpu",
                 "data.image_size=32", "data.num_workers=0", "data.batch_size=4", "trainer=gpu",
                 "debug=limit", "model.alpha=0.25", "trainer.max_epochs=1",
                 "trainer.enable_progress_bar=false", "~callbacks.model_summary"]  # fmt: skip
    report = train(make_cfg("train", overrides, tmp_path / "run"))
    assert 0 <= report["test"]["test/acc"] <= 1
