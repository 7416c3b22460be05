"""Reading image files (data/images.py): 16-bit, 32-bit and float images at their real range,
the refused ones by reason, the pixel limit; folders followed through links (predict's input,
image folders' class folders)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet_lab.data.imagefolder import ImageFolderDataModule
from mobilenet_lab.data.images import UnreadableImage, open_image
from mobilenet_lab.deploy.inputs import list_inputs
from mobilenet_lab.runs.errors import ConfigError
from tests.data_files import write_image_tree, write_twins


def test_deep_images_read_as_their_8_bit_twin(tmp_path: Path) -> None:
    """Pillow's convert("L") clips 16-bit and float images (to 0/255, to 0/1) instead of
    scaling them: each twin here reads as the 8-bit file, level for level."""
    files = write_twins(tmp_path, np.arange(256, dtype=np.uint8).reshape(16, 16))
    modes = {name: Image.open(path).mode for name, path in files.items()}
    assert modes == {"8.png": "L", "16.png": "I;16", "16.tif": "I;16", "16.pgm": "I", "f.tif": "F"}
    for channels, mode in ((1, "L"), (3, "RGB")):
        eight_bit = np.asarray(open_image(files["8.png"], channels))
        assert eight_bit.shape[-1 if channels == 3 else 0] in (3, 16)
        for name, path in files.items():
            image = open_image(path, channels)
            assert image.mode == mode
            assert np.array_equal(np.asarray(image), eight_bit), name


def test_a_32_bit_integer_tiff_is_scaled_by_its_declared_depth(tmp_path: Path) -> None:
    top = 2**31 - 1  # Pillow writes mode I as signed 32-bit samples
    Image.fromarray(np.array([[0, top // 5, top]], dtype=np.int32)).save(tmp_path / "i.tif")
    assert np.asarray(open_image(tmp_path / "i.tif", 1)).tolist() == [[0, 51, 255]]


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.array([[0.0, 1.5]], np.float32), r"float \(mode F\) pixels span 0 to 1.5: float"),
        (np.array([[0.0, np.nan]], np.float32), r"pixels span .*nan.*: float images are read as"),
        (np.array([[-5, 7]], np.int32), r"integer \(mode I\) pixels span -5 to 7, outside"),
        (np.zeros((2, 2, 3), np.uint8), r"its mode LAB is not read \(read modes: 1, L, .*F\)"),
    ],
)
def test_images_that_cannot_be_scaled_are_refused_by_reason(
    tmp_path: Path, pixels: np.ndarray, message: str
) -> None:
    path = tmp_path / "image.tif"
    image = Image.fromarray(pixels)
    (Image.frombytes("LAB", image.size, image.tobytes()) if pixels.ndim == 3 else image).save(path)
    with pytest.raises(UnreadableImage, match=message):
        open_image(path, 1)


def test_an_image_over_the_pixel_limit_names_its_size_and_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "photo.png"
    Image.new("L", (40, 30)).save(path)
    with pytest.raises(UnreadableImage, match=r"^40 x 30 = 1,200 pixels, over max_image_pixels of "
                       r"1,000: set max_image_pixels=1200 to read it$"):  # fmt: skip
        open_image(path, 1, max_pixels=1000)
    assert open_image(path, 1, max_pixels=1200).size == (40, 30)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # null: Pillow's, which refuses over 2x
    with pytest.raises(UnreadableImage, match=r"over Pillow's limit of 1,000: set max_image_pix"):
        open_image(path, 1)
    assert Image.MAX_IMAGE_PIXELS == 500  # put back after the header is read
    assert open_image(path, 1, max_pixels=2000).size == (40, 30)  # the setting lifts Pillow's


def test_folders_are_followed_through_links_once(tmp_path: Path) -> None:
    """rglob does not follow a linked folder (Python 3.11): its images were "no image files".
    A link back to a parent is not walked again; a file reached twice is listed once (by a
    glob too, whose ** did follow the link to a parent, listing one file 40 times)."""
    root, outside = tmp_path / "input", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    for folder, name in ((root / "real", "a.png"), (outside, "b.png")):
        Image.new("L", (8, 8)).save(folder / name)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "again").symlink_to(outside, target_is_directory=True)  # the same folder twice
    (root / "real" / "up").symlink_to(root, target_is_directory=True)  # a cycle
    (root / "real" / "same.png").symlink_to(root / "real" / "a.png")  # the same file twice
    files = list_inputs(str(root))
    assert [Path(f).relative_to(root).as_posix() for f in files] == ["again/b.png", "real/a.png"]
    (root / "real" / "a.png").unlink()
    (root / "again").unlink()
    assert [Path(f).name for f in list_inputs(str(root / "linked"))] == ["b.png"]
    assert [Path(f).name for f in list_inputs(str(root))] == ["b.png"]  # via linked/
    os.remove(root / "linked")
    with pytest.raises(ConfigError, match="holds no image files"):
        list_inputs(str(root))  # same.png: a link to nothing now, and up/ leads back here
    # a glob's ** follows links (up/ 40 times over, to the system's limit): listed once too
    Image.new("L", (8, 8)).save(root / "real" / "c.png")
    assert list_inputs(f"{root}/**/*.png") == [str(root / "real" / "c.png")]


def test_image_folders_read_deep_images_and_linked_class_folders(tmp_path: Path) -> None:
    """A 16-bit file gives the tensor of its 8-bit twin through the eval transform (and so in
    int8 calibration); a class folder that is a link to a folder elsewhere is a class."""
    tree = write_image_tree(tmp_path / "tree", classes=2, per_class=2)
    rng = np.random.default_rng(0)
    twins = write_twins(tmp_path / "twins", rng.integers(0, 256, (40, 48), dtype=np.uint8))
    (tree / "val" / "class_1").rename(tmp_path / "elsewhere")
    (tree / "val" / "class_1").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    for name in ("8.png", "16.png", "16.tif", "f.tif"):
        os.link(twins[name], tmp_path / "elsewhere" / f"twin_{name}")
    dm = ImageFolderDataModule(str(tree), num_classes=2, image_size=32, num_workers=0)
    dm.setup()
    dataset = dm.val_dataloader().dataset
    paths = [Path(path).name for path, _ in dataset.samples]
    assert sum(name.startswith("twin_") for name in paths) == 4
    read = {name: dataset[i] for i, name in enumerate(paths) if name.startswith("twin_")}
    eight_bit = read["twin_8.png"][0]
    for name, (image, label, bad) in read.items():
        assert torch.equal(image, eight_bit), name
        assert (label, bad) == (1, [])


def test_image_folders_name_an_image_over_the_pixel_limit(tmp_path: Path) -> None:
    tree = write_image_tree(tmp_path, classes=2, per_class=2)  # 48 x 40 images
    dm = ImageFolderDataModule(str(tree), num_classes=2, strict=True, max_image_pixels=1000)
    with pytest.raises(ConfigError, match=r"strict=true: 8 image\(s\) cannot be decoded: .*0\.jpg "
                       r"\(48 x 40 = 1,920 pixels, over data.max_image_pixels of 1,000: "
                       r"set data.max_image_pixels=1920 to read it\)"):  # fmt: skip
        dm.setup()
    with pytest.raises(ValueError, match="max_image_pixels=0 is not valid"):
        ImageFolderDataModule(str(tree), num_classes=2, max_image_pixels=0)
