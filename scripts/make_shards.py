"""Write an image folder or a Hugging Face data set as LitData shards:
``python scripts/make_shards.py <source> <out>``.

``<source>``: a folder with ``train/`` and ``val/`` of class folders (optional ``test/``), else
a Hugging Face data set as ``data=hf data.name=<source>`` reads it. ``<out>``: a new or empty
folder, or ``s3://...``; one LitData data set per split (``<out>/train/`` ...) holding each
image's encoded bytes, and ``<out>/classes.json``. Bad input: one line on stderr, exit status 2.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import mobilenet_lab.data.resolvers  # noqa: F401  (registers the resolvers the configs use)
from mobilenet_lab.data.shards import write_shards
from mobilenet_lab.runs.errors import exits_as_documented


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="an image folder (train/, val/), or a Hugging Face data set")
    parser.add_argument("out", help="a new folder, or s3://bucket/path")
    parser.add_argument("--chunk-bytes", default="64MB", help="the size of one shard file")
    parser.add_argument("--workers", type=int, default=1, help="writer processes")
    args = parser.parse_args()
    folder = Path(args.source, "train").is_dir()
    source = ["data=imagefolder", f"data.data_dir={args.source}"] if folder else [
        "data=hf", f"data.name={args.source}"]  # fmt: skip
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        module = instantiate(compose("train", overrides=source).data)
    module.setup("fit")
    counts = write_shards(module, module.classes, args.out, args.chunk_bytes, args.workers)
    print(f"Wrote {', '.join(f'{n} {split}' for split, n in counts.items())} images to {args.out}")


if __name__ == "__main__":
    with exits_as_documented():  # one line: exit 2 (bad input) or 1
        main()
