"""LitData shards (``scripts/make_shards.py``, ``data=shards``): the JPEG bytes kept, training
and scoring from them, each image once per epoch over DDP ranks and loader workers, a run
killed mid-epoch resuming at its batch, and data_dir values that are no shards refused."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from litdata import StreamingDataset, optimize

from mobilenet_lab.data.shards import ShardsDataModule
from mobilenet_lab.jobs.startup_checks import check_train_config
from mobilenet_lab.runs.errors import ConfigError
from mobilenet_lab.train import train
from tests.conftest import ROOT, run_cli
from tests.data_files import write_image_tree, write_shards_of
from tests.kill_switch import kill_env

SHORT = ["model.alpha=0.25", "data.image_size=32", "data.batch_size=4", "data.num_workers=0",
         "trainer.enable_progress_bar=false", "~callbacks.model_summary"]  # fmt: skip


def image_folder(root: Path, per_class: int = 4, corrupt: bool = False) -> Path:
    """train/, val/ and test/ (a copy of val/) of small JPEGs in 3 classes."""
    tree = write_image_tree(root, per_class=per_class, corrupt=corrupt)
    shutil.copytree(tree / "val", tree / "test")
    return tree


@pytest.fixture(scope="module")
def tree_and_shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An image folder with one truncated JPEG in train/, and its shards."""
    root = tmp_path_factory.mktemp("shards")
    tree = image_folder(root / "tree", corrupt=True)
    return tree, write_shards_of(tree, root / "shards")


def test_make_shards_keeps_each_files_bytes_and_never_overwrites(run_main, tmp_path: Path) -> None:
    tree = image_folder(tmp_path / "tree", per_class=2)
    out = tmp_path / "shards"
    made = run_main("scripts/make_shards.py", str(tree), str(out))
    assert made.returncode == 0, made.stderr[-3000:]
    assert "Wrote 6 train, 6 val, 6 test images" in made.stdout
    info = json.loads((out / "classes.json").read_text())
    assert info["classes"] == ["class_0", "class_1", "class_2"]
    assert info["splits"] == {"train": 6, "val": 6, "test": 6}
    for split in ("train", "val", "test"):
        written = list(StreamingDataset(str(out / split)))
        items = sorted(written, key=lambda item: item["index"])
        files = sorted((tree / split).glob("*/*.jpg"))
        assert [item["index"] for item in items] == list(range(len(files)))
        assert (written != items) == (split == "train")  # training's order mixes the classes
        for index, (item, path) in enumerate(zip(items, files, strict=True)):
            assert bytes(item["image"]) == path.read_bytes()
            assert item["name"] == f"{split}[{index}] ({path})"
            assert info["classes"][item["label"]] == path.parent.name

    before = sorted(p.name for p in out.rglob("*"))
    again = run_main("scripts/make_shards.py", str(tree), str(out))
    assert again.returncode == 2
    (line,) = again.stderr.strip().splitlines()
    assert f"out={str(out)!r} is not empty" in line and "new folder" in line
    assert sorted(p.name for p in out.rglob("*")) == before


def test_train_and_eval_from_shards_score_as_the_image_folder(
    make_cfg, run_main, tree_and_shards: tuple[Path, Path], tmp_path: Path
) -> None:
    """Trains with data=shards (a truncated JPEG replaced and named); the checkpoint scores the
    same test accuracy through src/eval.py from the shards and from the image folder."""
    tree, shards = tree_and_shards
    cfg = make_cfg("train", ["data=shards", f"data.data_dir={shards}", "trainer.max_epochs=1",
                             *SHORT], tmp_path / "run")  # fmt: skip
    assert cfg.data.num_classes == 3
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\)[\s\S]*broken\.jpg"):
        report = train(cfg)
    assert report["data"] == "shards" and report["test_split"] == "test"
    scores = {}
    for name, key, where in (("shards", "data_dir", shards), ("imagefolder", "data_dir", tree)):
        scored = run_main("src/eval.py", f"ckpt_path={report['best_checkpoint']}",
                          f"data={name}", f"data.{key}={where}", "data.num_workers=0",
                          f"paths.log_dir={tmp_path / name}")  # fmt: skip
        assert scored.returncode == 0, scored.stderr[-3000:]
        (metrics,) = (tmp_path / name).rglob("metrics.json")
        scores[name] = json.loads(metrics.read_text())["test"]["test/acc"]
    assert scores["shards"] == scores["imagefolder"]  # the same images, the same scores
    # the run's own test pass: a one-epoch network's huge logits can flip one image on rounding
    assert scores["shards"] == pytest.approx(report["test"]["test/acc"], abs=1 / 12 + 1e-6)


def write_other_litdata(out: Path) -> None:
    optimize(fn=lambda i: {"x": i}, inputs=list(range(4)), output_dir=str(out),
             chunk_size=4, num_workers=1, verbose=False, start_method="fork")  # fmt: skip


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("empty", "is empty: use a folder"),
        ("missing", "does not exist"),
        ("parquet", "holds .parquet files, not shards (for those: data=hf data.name=<folder>)"),
        ("one_litdata", "is one LitData data set, not one per split with classes.json"),
        ("other_items", "the items of train/ hold {'x': 'int'}, not this kit's"),
    ],
)
def test_a_data_dir_without_shards_is_refused_at_start(
    make_cfg, tmp_path: Path, tree_and_shards: tuple[Path, Path], layout: str, message: str
) -> None:
    data_dir = tmp_path / "data"
    if layout != "missing":
        data_dir.mkdir()
    if layout == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"label": [0, 1]}), data_dir / "train-00000.parquet")
    if layout == "one_litdata":
        write_other_litdata(data_dir)
    if layout == "other_items":
        shutil.copy(tree_and_shards[1] / "classes.json", data_dir)
        write_other_litdata(data_dir / "train")
    cfg = make_cfg("train", ["data=shards", f"data.data_dir={data_dir}"])
    with pytest.raises(ConfigError) as error:
        check_train_config(cfg)
    (line,) = str(error.value).splitlines()
    assert line.startswith(f"data.data_dir={str(data_dir)!r}") and message in line
    assert "written by scripts/make_shards.py" in line


def test_a_bad_data_dir_exits_2_before_any_run_folder(run_main, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    run = run_main("src/train.py", "data=shards", f"data.data_dir={tmp_path / 'empty'}",
                   f"paths.log_dir={tmp_path / 'logs'}")  # fmt: skip
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert "is empty: use a folder (or s3://...) written by scripts/make_shards.py" in line
    assert not (tmp_path / "logs").exists()


class SeenImages(L.Callback):
    """Test-only: appends, as each training batch starts, a line ``[epoch, batch, digests]``
    (a digest per image, as the model gets it) to ``<out_dir>/rank<global rank>.jsonl``,
    flushed at once, so a killed run leaves what it trained on."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        digests = [image_digest(image) for image in batch[0]]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / f"rank{trainer.global_rank}.jsonl", "a") as file:
            file.write(json.dumps([trainer.current_epoch, batch_idx, digests]) + "\n")


def image_digest(image: Any) -> str:
    return hashlib.sha1(image.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def seen(out_dir: Path) -> dict[int, list[list]]:
    return {int(path.stem[4:]): [json.loads(line) for line in path.read_text().splitlines()]
            for path in sorted(out_dir.glob("rank*.jsonl"))}  # fmt: skip


@pytest.mark.slow
def test_ddp_ranks_and_workers_see_each_image_once_and_resume_mid_epoch(tmp_path: Path) -> None:
    """2 CPU ranks (gloo) x 2 loader workers, batch 4, 38 training images: each epoch every
    image is trained on once, but for the 38 mod 8 that the epoch drops so that both ranks
    train on 4 batches. A run killed as batch 2 of epoch 0 starts (a step checkpoint after
    each step) resumes from its last.ckpt with exactly the images it had not trained on."""
    shards = write_shards_of(
        write_image_tree(tmp_path / "tree", classes=2, per_class=19), tmp_path / "s"
    )
    module = ShardsDataModule(str(shards), 2, image_size=32, augment=False, num_workers=0)
    decode = module.decoder(training=False)
    index_of = {image_digest(decode(item["image"])): item["index"]
                for item in StreamingDataset(str(shards / "train"))}  # fmt: skip
    assert len(index_of) == 38

    args = ["src/train.py", "trainer=ddp_cpu", "data=shards", f"data.data_dir={shards}",
            "data.num_workers=2", "data.augment=false", "trainer.max_epochs=2",
            "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
            "+callbacks.last_checkpoint.every_n_train_steps=1",
            "+callbacks.kill._target_=tests.kill_switch.KillSwitch",  # before seen: unseen
            "+callbacks.seen._target_=tests.test_shards.SeenImages",
            f"+callbacks.seen.out_dir={tmp_path / 'seen'}", f"paths.log_dir={tmp_path / 'logs'}",
            *SHORT]  # fmt: skip
    args.remove("data.num_workers=0")
    env = {"PYTHONPATH": str(ROOT)}
    killed = run_cli(*args, env={**env, **kill_env(0, batch=2)})
    assert killed.returncode != 0, killed.stdout[-3000:]
    (last,) = (tmp_path / "logs").rglob("last.ckpt")
    resumed = run_cli("src/train.py", f"ckpt_path={last}", f"paths.log_dir={tmp_path / 'logs'}",
                      env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    rows = seen(tmp_path / "seen")
    assert set(rows) == {0, 1}
    for rank, batches in rows.items():  # two runs: epoch 0's batches 0, 1, then 2, 3; epoch 1's
        assert [(epoch, batch) for epoch, batch, _ in batches] == [
            (0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)], rank  # fmt: skip
    for epoch in (0, 1):
        images = [index_of[d] for batches in rows.values() for e, _, ds in batches if e == epoch
                  for d in ds]  # fmt: skip
        counts = Counter(images)
        assert len(images) == 32 and max(counts.values()) == 1, (epoch, counts)
