"""The README and ``docs/`` (issue 19): every command in their ```bash blocks runs, and the
README's layout table names exactly the package's modules and the config groups.

A command runs in this process as its page gives it, with the page's placeholders filled from
small files the test writes (a trained run for ``<run>``, a sweep for ``multiruns/<time>``, an
image tree for ``/data/imagenet``, CIFAR's on-disk format for ``/data/cifar``, a Keras ``.h5``,
a PNG) and made cheap: ``debug=fast_dev_run`` for training and scoring, few timing repeats, two
Optuna trials, logs in a temporary folder. What needs GPUs, SLURM or several machines is
composed only (``--cfg job``): its runs are tested where they can be, in
``tests/test_distributed.py`` and ``tests/test_cli.py``. ``pip``, ``pytest`` and ``pre-commit``
are what ``.ci/run`` and ``tests/test_lint.py`` run. A command two pages show runs once, on
the first (the README, then ``docs/`` in name order).
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HYDRA_APPS = {"src/train.py", "src/eval.py", "src/predict.py", "src/export.py",
              "scripts/profile_model.py"}  # fmt: skip
SCRIPTS = {"scripts/report.py", "scripts/benchmark_train.py", "scripts/benchmark_data.py",
           "scripts/benchmark_export.py", "scripts/benchmark_report.py",
           "scripts/benchmark_distillation.py", "scripts/benchmark_qat.py"}  # fmt: skip
# More processes, GPUs or machines than a test has: composed, not run.
COMPOSE_ONLY = {"trainer=gpu", "trainer=ddp", "trainer=ddp_cpu", "hydra/launcher=slurm"}
# Smaller settings of a script's own options, appended (argparse: the last one wins).
# (the phone runtimes' exports are tested in tests/test_phone_export.py)
CHEAP_SCRIPT_ARGS = {
    "scripts/benchmark_export.py": ["--quick", "--repeats", "1", "--runtimes", "torch,onnx_fp32"]
}
# Run, in a smoke mode, by tests/test_scripts.py (gpu_check.sh: its --cpu dry run).
SMOKE_TESTED = {"scripts/benchmark_train.py", "scripts/benchmark_data.py",
                "scripts/benchmark_distillation.py", "scripts/benchmark_qat.py",
                "scripts/gpu_check.sh"}  # fmt: skip
# Recipes made for GPUs run here on the CPU preset.
GPU_RECIPES = {f"experiment={path.stem}" for path in (ROOT / "conf" / "experiment").glob("*.yaml")
               if "override /trainer: gpu" in path.read_text()}  # fmt: skip
# Commands a page shows failing, with the exit status and message it shows: run with 3
# batches an epoch (debug=limit), so that the loss has the steps to diverge in.
SHOWN_FAILING = {"python src/train.py -m optimizer.lr=0.05,1e6": (1, "1 of 2 jobs failed")}
FAST_SPEED = ["speed.repeats=1", "speed.warmup=0", "speed.batch_size=2"]


def bash_commands(page: Path) -> list[list[str]]:
    """The commands of a page's ```bash blocks: continued lines joined, comments dropped, and
    ``a && b`` as two commands."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                end = words.index("&&") if "&&" in words else len(words)
                commands.append(words[:end])
                words = words[end + 1 :]
    return commands


def test_every_page_has_commands_and_links_to_the_others() -> None:
    readme = PAGES[0].read_text()
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, f"the README does not link {page.name}"
        assert bash_commands(page), f"{page.name} shows no command"
    assert len(readme.splitlines()) <= 200


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The files the pages' placeholders stand for."""
    from mobilenet_lab.train import train
    from tests.conftest import compose_cfg
    from tests.data_files import write_cifar, write_image_tree
    from tests.test_keras_port import randomised_keras_mobilenet, write_keras2_h5
    from tests.test_timm_models import fake_hf_cache

    root = tmp_path_factory.mktemp("docs")
    tiny = ["debug=limit", "~callbacks.model_summary", "trainer.enable_progress_bar=false",
            "trainer.max_epochs=1"]  # fmt: skip
    run = root / "runs" / "2026-01-01_00-00-00_000000"  # the default network: ckpt_path=last
    train(compose_cfg("train", tiny, run))
    sweep = root / "sweep"
    for job, alpha in enumerate((0.25, 0.5)):
        train(compose_cfg("train", [*tiny, f"model.alpha={alpha}"], sweep / str(job)))
    pictures = root / "pictures"
    pictures.mkdir()
    for i in range(3):
        ink = np.zeros((8, 8), np.uint8)
        ink[1:7, 3 + i % 2] = 255
        Image.fromarray(ink).save(pictures / f"digit_{i}.png")
    fake_hf_cache(root / "hf_cache", "mobilenetv1_100")
    keras = {}
    for alpha, rows, name in [(0.5, 160, "mobilenet_5_0_160_tf.h5")]:
        keras[name] = write_keras2_h5(randomised_keras_mobilenet(alpha, rows), root / name)
    return {"root": root, "run": run, "hf_cache": root / "hf_cache", "sweep": sweep,
            "pictures": pictures, "imagenet": write_image_tree(root / "imagenet"),
            "cifar": write_cifar(write_cifar(root / "cifar", "cifar10"), "cifar100"),
            **keras}  # fmt: skip


def filled(words: list[str], space: dict[str, Path]) -> list[str]:
    """The command with its placeholders replaced by the workspace's files."""
    values = {
        "logs/train/runs/<time>": str(space["run"]),
        "<run>": str(space["run"]),
        "logs/train/multiruns/<time>": str(space["sweep"]),
        "/data/imagenet": str(space["imagenet"]),
        "/data/cifar": f"{space['cifar']} data.val_size=10",  # 100 training images there
        "input=photo.png": f"input={space['pictures'] / 'digit_0.png'}",
        "input=<folder>": f"input={space['pictures']}",
        "--out report/": f"--out {space['root'] / 'report'}",
        "hydra.sweeper.n_trials=20": "hydra.sweeper.n_trials=2",
        "--master-addr=<host>": "--master-addr=127.0.0.1",
        "keras:mobilenet_5_0_160_tf.h5": f"keras:{space.get('mobilenet_5_0_160_tf.h5')}",
    }
    line = shlex.join(words)
    for placeholder, value in values.items():
        line = line.replace(placeholder, value)
    assert "<" not in line, f"a placeholder this test does not fill: {line}"
    return shlex.split(line)


def composed_only(script: str, args: list[str]) -> list[str]:
    """Hydra's ``--cfg all``: the config, Hydra's included (the launcher), composed and printed;
    for a multirun, that of its first job (``--cfg`` does not go with ``-m``)."""
    return [script, *(arg for arg in args if arg not in ("-m", "--multirun")), "--cfg", "all"]


def cheap(words: list[str], space: dict[str, Path], logs: Path) -> tuple[list[str], str]:
    """``(script and arguments to run, how)``: the command made cheap, or composed only, its
    runs in ``logs`` (where ``ckpt_path=last`` finds a copy of the workspace's run)."""
    if words[0] == "torchrun":
        script = next(word for word in words if word.endswith(".py"))
        return composed_only(script, words[words.index(script) + 1 :]), "composed"
    assert words[0] == "python", f"not a command this test knows how to check: {words}"
    script, args = words[1], words[2:]
    if "ckpt_path=last" in args:
        shutil.copytree(space["run"], logs / "train" / "runs" / space["run"].name)
    logs = f"paths.log_dir={logs}"
    if script in HYDRA_APPS and COMPOSE_ONLY & set(args):
        return composed_only(script, args), "composed"
    if script in {"src/train.py", "src/eval.py"}:
        debug = [] if "debug=fast_dev_run" in args else ["debug=fast_dev_run"]
        debug = ["debug=limit"] if shlex.join(words) in SHOWN_FAILING else debug
        resume = ["trainer.max_epochs=2"] if "ckpt_path=last" in args else debug
        quiet = ["trainer.enable_progress_bar=false"]  # a resume keeps the run's own batch
        quiet += [] if "ckpt_path=last" in args else ["data.batch_size=8"]
        quiet += ["trainer=cpu"] if GPU_RECIPES & set(args) else []
        return [script, *args, *resume, *quiet, logs], "run"
    if script == "src/export.py":  # the workspace's 1-epoch network guesses (about 11%): its
        # int8 file is not held to the gate here (tests/test_export_predict.py tests the gate)
        return [script, *args, *FAST_SPEED, "check_images=8", "int8_min_ratio=0.01", logs], "run"
    if script in {"src/predict.py"}:
        return [script, *args, logs], "run"
    if script == "scripts/profile_model.py":
        return [script, *args, *FAST_SPEED, logs], "run"
    assert script in SCRIPTS, f"{script}: not an entry point or script of the kit"
    return [script, *args, *CHEAP_SCRIPT_ARGS.get(script, [])], "run"


def covered_elsewhere(words: list[str]) -> bool:
    """The set-up and test commands (``.ci/run`` runs the README's, test_lint runs ruff), and
    the benchmarks tests/test_scripts.py runs."""
    line = shlex.join(words)
    if words[0] in ("python", "bash") and words[1] in SMOKE_TESTED:
        assert f'"{words[1]}"' in (ROOT / "tests" / "test_scripts.py").read_text()
        return True
    if words[0] == "pip":
        assert line.replace("'", '"') in (ROOT / ".ci" / "run").read_text(), line
        return True
    if words[0] == "pytest":  # this suite itself, or a part of it
        return True
    if words[0] == "pre-commit":
        assert "ruff" in (ROOT / ".pre-commit-config.yaml").read_text()
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_command_of_the_page_runs(
    page: Path, workspace: dict[str, Path], run_main: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    # timm:mobilenetv1_100 from a cache of random weights
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(workspace["hf_cache"]))
    done = {"run": 0, "composed": 0, "elsewhere": 0, "earlier page": 0}
    earlier = {shlex.join(words) for before in PAGES[: PAGES.index(page)]
               for words in bash_commands(before)}  # fmt: skip
    for number, words in enumerate(bash_commands(page)):
        if covered_elsewhere(words):
            done["elsewhere"] += 1
            continue
        # a command two pages show runs once, on the first; but an export writes the files a
        # later command of this page reads, and pytest-xdist may run the pages on two workers
        if shlex.join(words) in earlier and "src/export.py" not in words:
            done["earlier page"] += 1
            continue
        logs = workspace["root"] / page.stem / str(number)
        command, how = cheap(filled(words, workspace), workspace, logs)
        result = run_main(*command)
        code, message = SHOWN_FAILING.get(shlex.join(words), (0, ""))
        assert result.returncode == code, f"{shlex.join(words)}\n{result.stderr[-3000:]}"
        assert message in result.stderr
        if how == "composed":
            assert "trainer:" in result.stdout and "hydra:" in result.stdout, result.stdout[-2000:]
        done[how] += 1
    print(f"{page.name}: {done}")
    assert sum(done.values()) == len(bash_commands(page))


def layout_section() -> str:
    readme = PAGES[0].read_text()
    return readme.split("## Layout", 1)[1].split("\n## ", 1)[0]


def test_the_layout_table_names_every_module_and_config_group() -> None:
    """Each module of the package and each config group of ``conf/`` is in the README's
    layout table, and everything the table names exists."""
    section = layout_section()
    package = ROOT / "src" / "mobilenet_lab"
    modules = {path.name for path in package.rglob("*.py") if path.name != "__init__.py"}
    folders = {f"{path.name}/" for path in package.iterdir() if (path / "__init__.py").is_file()}
    groups = {f"{path.name}/" for path in (ROOT / "conf").iterdir() if path.is_dir()}
    tops = {path.name for path in (ROOT / "conf").glob("*.yaml")}
    named = set(re.findall(r"`([\w./]+)`", section))
    assert not (modules | folders | groups | tops) - named, "missing from the layout table"
    entry_points = {f"{d}/{p.name}" for d in ("src", "scripts") for p in (ROOT / d).glob("*.py")}
    plugin = "src/hydra_plugins/mobilenet_lab_submitit_launcher.py"
    tests = {f"tests/{path.name}" for path in (ROOT / "tests").glob("*.py")}
    known = modules | folders | groups | tops | entry_points | tests | {plugin, "conf/"}
    known.add("src/mobilenet_lab/")
    assert not {name for name in named if "=" not in name} - known - {"slurm", "slurm_local"}
