"""``data=hf``: Hugging Face data sets read from a save_to_disk folder, parquet and arrow files,
the hub's cache, and as streams over DDP ranks and loader workers (exactly once, resumable)."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet_lab.data.encoded import IMAGENET_MEAN, IMAGENET_STD
from mobilenet_lab.data.hf import HFDataModule
from mobilenet_lab.jobs.startup_checks import check_train_config
from mobilenet_lab.runs.errors import ConfigError
from mobilenet_lab.train import train
from tests.conftest import ROOT, run_cli

CLASSES = ["cat", "dog", "fox"]
SHORT = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "~callbacks.model_summary",
         "~callbacks.precise_bn", "model.alpha=0.25", "data.image_size=32",
         "data.num_workers=0", "data.batch_size=4"]  # fmt: skip


def level(index: int) -> int:
    """Image ``index`` is one flat grey: its level tells it apart after any resize or JPEG."""
    return 10 + 5 * index


def encoded(index: int, kind: str = "PNG") -> bytes:
    pixels = np.full((20, 24, 3), level(index), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, kind)
    return buffer.getvalue()


def image_table(
    count: int, start: int = 0, label: str = "classes", broken: tuple[int, ...] = ()
) -> Any:
    """``count`` images (PNGs and JPEGs) with an ``index`` column; ``label``: a ClassLabel
    ("classes"), plain integers ("ints") or strings ("strings"); the ``broken`` ones cut short."""
    import datasets

    indices = list(range(start, start + count))
    files = [encoded(i, "PNG" if i % 2 else "JPEG") for i in indices]
    files = [data[: len(data) // 3] if i in broken else data
             for i, data in zip(indices, files, strict=True)]  # fmt: skip
    labels = [i % len(CLASSES) for i in indices]
    table = datasets.Dataset.from_dict({
        "index": indices,
        "picture": [{"bytes": data, "path": f"{i}.img"}
                    for i, data in zip(indices, files, strict=True)],
        "kind": [CLASSES[c] if label == "strings" else c for c in labels],
    }).cast_column("picture", datasets.Image())  # fmt: skip
    if label == "classes":
        table = table.cast_column("kind", datasets.ClassLabel(names=CLASSES))
    return table


def index_of(images: torch.Tensor) -> list[int]:
    """Which image each of a batch's (eval-transformed) images is, read back from its red."""
    red = images[:, 0].flatten(1).median(1).values * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    return [round((value * 255 - 10) / 5) for value in red.tolist()]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A save_to_disk folder with train (24 images) and test (6), no validation split."""
    import datasets

    folder = tmp_path_factory.mktemp("hf") / "saved"
    datasets.DatasetDict(train=image_table(24), test=image_table(6, start=24)).save_to_disk(folder)
    return folder


def test_local_formats_give_the_same_images_and_find_columns(saved: Path, tmp_path: Path) -> None:
    """save_to_disk, parquet files in a folder (split names from the file names), one arrow
    file: the image and label columns found by type, the class names from the ClassLabel."""
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    image_table(12).to_parquet(parquet / "train-00000.parquet")
    image_table(12, start=12).to_parquet(parquet / "train-00001.parquet")
    image_table(6, start=24).to_parquet(parquet / "validation-00000.parquet")
    image_table(6, start=30).to_parquet(parquet / "test-00000.parquet")
    arrow = next((saved / "train").glob("*.arrow"))
    for name in (saved, parquet, arrow):
        dm = HFDataModule(str(name), num_classes=3, num_workers=0, image_size=32, batch_size=4)
        assert (dm.image, dm.label, dm.classes) == ("picture", "kind", CLASSES)
        dm.setup()
        seen = []
        for images, labels, bad in dm.test_dataloader() if name != arrow else dm.val_dataloader():
            assert images.shape[1:] == (3, 32, 32) and bad == []
            seen += index_of(images)
            assert labels.tolist() == [i % 3 for i in index_of(images)]
        expected = {saved: range(24, 30), parquet: range(30, 36)}.get(name)
        if expected is not None:
            assert sorted(seen) == list(expected)


def test_a_missing_split_is_held_out_of_train_and_said(saved: Path, capsys) -> None:
    dm = HFDataModule(str(saved), num_classes=3, num_workers=0, val_size=0.25, split_seed=3)
    dm.setup()
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"Holding out val: data.name={str(saved)!r} has no val split, so 6")
    train, val = ({file for file, _ in dm.split_samples(split)} for split in ("train", "val"))
    assert (len(train), len(val), len(train | val)) == (18, 6, 24)  # disjoint, all of train
    again = HFDataModule(str(saved), num_classes=3, num_workers=0, val_size=6, split_seed=3)
    again.setup()
    assert [r[0] for r in again.split_samples("val")] == [r[0] for r in dm.split_samples("val")]


def test_trains_and_eval_scores_the_checkpoint(saved: Path, make_cfg, run_main, tmp_path) -> None:
    overrides = ["data=hf", f"data.name={saved}", "data.val_size=6", *SHORT]
    cfg = make_cfg("train", overrides, tmp_path / "run")
    assert cfg.data.num_classes == cfg.model.num_classes == 3
    report = train(cfg)
    assert report["data"] == "hf" and report["epochs"] == 1
    evaluated = run_main("src/eval.py", f"ckpt_path={report['best_checkpoint']}", "data=hf",
                         f"data.name={saved}", "data.image_size=32", "data.num_workers=0",
                         f"paths.log_dir={tmp_path / 'logs'}")  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (metrics,) = (tmp_path / "logs").rglob("metrics.json")
    # relative: a one-epoch run's loss can be 1e10, where float rounding moves the 7th digit
    assert json.loads(metrics.read_text())["test"] == pytest.approx(report["test"], rel=1e-5)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.image_column=photo", r"data\.image_column='photo' is not a column: the columns "
         r"are index \(Value\), picture \(Image\), kind \(Value\)$"),
        ("data.label_column=kind", r"data\.label_column='kind' holds string, not class indices"),
    ],
)  # fmt: skip
def test_bad_columns_fail_at_start_naming_the_columns(
    make_cfg, tmp_path: Path, override: str, message: str
) -> None:
    import datasets

    datasets.DatasetDict(train=image_table(6, label="strings")).save_to_disk(tmp_path / "s")
    cfg = make_cfg("train", ["data=hf", f"data.name={tmp_path / 's'}", override])
    with pytest.raises(ConfigError, match=message):
        check_train_config(cfg)


def test_integer_labels_count_their_classes(make_cfg, tmp_path: Path) -> None:
    import datasets

    ints = image_table(6, label="ints")
    datasets.DatasetDict(train=ints).save_to_disk(tmp_path / "two")  # index and kind
    with pytest.raises(ConfigError, match=r"several \(index, kind\) integer columns: set data\.l"):
        HFDataModule(str(tmp_path / "two"), num_classes=3)
    named = ints.rename_column("kind", "label")
    datasets.DatasetDict(train=named).save_to_disk(tmp_path / "named")
    cfg = make_cfg("train", ["data=hf", f"data.name={tmp_path / 'named'}"])
    assert cfg.data.num_classes == 3
    dm = HFDataModule(str(tmp_path / "named"), num_classes=3)
    assert (dm.label, dm.classes) == ("label", None)


def test_an_uncached_hub_name_fails_at_once(run_main, tmp_path: Path) -> None:
    """Offline (HF_HUB_OFFLINE=1): refused before any look-up. Online: one look-up with a
    timeout (here, with no network, refused at once; elsewhere: no such data set)."""
    for env in ({"HF_HUB_OFFLINE": "1"}, {}):
        started = time.monotonic()
        result = run_main("src/train.py", "data=hf", "data.name=nobody/no-such-set",
                          f"paths.log_dir={tmp_path / 'logs'}", env=env)  # fmt: skip
        assert time.monotonic() - started < 15
        assert result.returncode == 2, result.stderr[-2000:]
        (line,) = [line for line in result.stderr.splitlines() if "no-such-set" in line]
        said = ["and HF_HUB_OFFLINE=1"] if env else ["could not be asked", "not a data set on"]
        assert any(words in line for words in said), line
        assert not (tmp_path / "logs").exists()


class SeenImages(L.Callback):
    """Appends, after each training batch, its epoch, index and images (by ``index_of``) to
    ``<out_dir>/rank<global rank>.jsonl``: what each DDP rank trained on, kept through a kill."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        self.out_dir.mkdir(parents=True, exist_ok=True)
        row = {"epoch": trainer.current_epoch, "batch": batch_idx, "images": index_of(batch[0])}
        with open(self.out_dir / f"rank{trainer.global_rank}.jsonl", "a") as file:
            file.write(json.dumps(row) + "\n")


def write_shards(
    folder: Path, shards: int = 4, per_shard: int = 8, broken: tuple[int, ...] = ()
) -> Path:
    """Train in ``shards`` parquet files, validation and test in one each."""
    folder.mkdir()
    for shard in range(shards):
        table = image_table(per_shard, start=shard * per_shard, broken=broken)
        table.to_parquet(folder / f"train-{shard}.parquet")
    image_table(4, start=32).to_parquet(folder / "validation-0.parquet")
    image_table(4, start=36).to_parquet(folder / "test-0.parquet")
    return folder


def test_a_stream_replaces_bad_images_and_resumes_at_its_position(tmp_path: Path) -> None:
    """2 loader workers, a shard each; image 5 cannot be decoded: worker 0 gives its last good
    image (4) in its place and names it. A new loader put at the position after batch 1 gives
    the first loader's batches 2 and 3."""
    data = write_shards(tmp_path / "shards", shards=2, broken=(5,))
    settings = {"num_classes": 3, "streaming": True, "num_workers": 2, "image_size": 32,
                "batch_size": 4, "augment": False, "shuffle_buffer": 0}  # fmt: skip
    dm = HFDataModule(str(data), **settings)
    dm.setup()
    loader = dm.train_dataloader()
    batches, bad = [], []
    for images, labels, names in loader:
        batches.append(index_of(images))
        bad += names
        assert labels.tolist() == [i % 3 for i in index_of(images)]
        if len(batches) == 2:
            position = loader.position()
    assert len(loader) == len(batches) == 4
    assert sorted(i for batch in batches for i in batch) == sorted([*range(5), 4, *range(6, 16)])
    assert bad == [bad[0]] and bad[0].startswith("5.img (")
    again = HFDataModule(str(data), **settings)
    again.setup()
    again.load_state_dict({"train_stream": position})
    assert [index_of(images) for images, _, _ in again.train_dataloader()] == batches[2:]


@pytest.mark.slow
def test_streaming_over_2_ddp_ranks_sees_each_image_once_and_resumes_mid_epoch(
    tmp_path: Path,
) -> None:
    """2 CPU ranks x 2 loader workers, 32 train images in 4 shards, batch 4: 4 batches per
    rank an epoch. Killed as batch 2 of epoch 1 starts, resumed from the step checkpoint:
    epoch 0 and epoch 1 (its first run's batches and the resumed run's) each hold every image
    once. PreciseBatchNorm (on) reads training batches after each epoch: a pass of its own."""
    from tests.kill_switch import kill_env

    data, seen, logs = write_shards(tmp_path / "shards"), tmp_path / "seen", tmp_path / "logs"
    args = ["trainer=ddp_cpu", "data=hf", f"data.name={data}", "data.streaming=true",
            "data.augment=false", "data.shuffle_buffer=0", *SHORT[1:3], *SHORT[4:6],
            "trainer.max_epochs=2",
            "data.num_workers=2", "data.batch_size=4", f"paths.log_dir={logs}"]  # fmt: skip
    callbacks = ["+callbacks.kill._target_=tests.kill_switch.KillSwitch",
                 "+callbacks.seen._target_=tests.test_hf_data.SeenImages",
                 f"+callbacks.seen.out_dir={seen}",
                 "+callbacks.step._target_=lightning.pytorch.callbacks.ModelCheckpoint",
                 f"+callbacks.step.dirpath={tmp_path / 'steps'}", "+callbacks.step.filename=step",
                 "+callbacks.step.every_n_train_steps=1",
                 "+callbacks.step.enable_version_counter=false"]  # fmt: skip
    path = f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    killed = run_cli("src/train.py", *args, *callbacks, env={"PYTHONPATH": path, **kill_env(1, 2)})
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_cli("src/train.py", *args, f"ckpt_path={tmp_path / 'steps' / 'step.ckpt'}",
                      env={"PYTHONPATH": path})  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = [json.loads(line) for rank in (0, 1) for line in
            (seen / f"rank{rank}.jsonl").read_text().splitlines()]  # fmt: skip
    for epoch in (0, 1):
        batches = sorted((row["batch"], len(row["images"])) for row in rows
                         if row["epoch"] == epoch)  # fmt: skip
        assert batches == [(b, 4) for b in range(4) for _ in range(2)]  # each rank 4 batches once
        images = sorted(i for row in rows if row["epoch"] == epoch for i in row["images"])
        assert images == list(range(32))


def test_a_missing_path_or_a_folder_without_tables_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.name='/no/such/folder' does not exist: give"):
        HFDataModule("/no/such/folder", num_classes=3)
    (tmp_path / "notes.txt").write_text("no tables here")
    with pytest.raises(ConfigError, match=r"holds no \.parquet or \.arrow file: give a save_to"):
        HFDataModule(str(tmp_path), num_classes=3)
