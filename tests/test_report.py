"""The accuracy-cost report, runs that fail loudly, and the Optuna sweep."""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf, open_dict

from mobilenet_lab.analysis.pareto import pareto_optimal
from mobilenet_lab.analysis.report import write_report
from mobilenet_lab.analysis.runs_table import flatten, read_runs, report_rows
from mobilenet_lab.evaluate import evaluate
from mobilenet_lab.runs.errors import ConfigError
from mobilenet_lab.runs.metrics import SCHEMA, read_metrics
from mobilenet_lab.train import train
from tests.conftest import ROOT

TINY = ["model.alpha=0.25", "data.image_size=32", "trainer.max_epochs=1",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.enable_progress_bar=false", "~callbacks.model_summary"]  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SPEED = OmegaConf.load(ROOT / "conf" / "speed" / "default.yaml")  # as scripts/report.py reads it


def test_pareto_marks_the_runs_no_other_run_beats() -> None:
    rows = [
        {"status": "ok", "mult_adds": 10, "test/acc": 0.90},  # cheapest: optimal
        {"status": "ok", "mult_adds": 20, "test/acc": 0.85},  # beaten by the first
        {"status": "ok", "mult_adds": 20, "test/acc": 0.95},  # optimal
        {"status": "ok", "mult_adds": 40, "test/acc": 0.95},  # as accurate, dearer: beaten
        {"status": "ok", "mult_adds": 80, "test/acc": 0.97},  # most accurate: optimal
        {"status": "diverged", "mult_adds": 5, "test/acc": 0.99},  # failed: never optimal
        {"status": "ok", "mult_adds": 80, "test/acc": 0.97},  # a tie: neither beats the other
    ]
    assert pareto_optimal(rows, "mult_adds") == [True, False, True, False, True, False, True]


def test_report_says_which_runs_were_tested_on_val() -> None:
    from mobilenet_lab.analysis.report_markdown import markdown

    rows = [{"run": run, "run_dir": f"/nowhere/{run}", "status": "ok", "test_split": split}
            for run, split in (("0", "test"), ("1", "val"), ("2", None))]  # fmt: skip
    text = markdown(rows, "t", "cpu")
    assert "## Tested on val/\n\n`1`: an image folder without test/" in text
    assert "`0`" not in text.split("## Tested on val/")[1]
    assert "Tested on val/" not in markdown(rows[:1], "t", "cpu")


def _fake_run(run_dir: Path, cfg: DictConfig, metrics: dict | str | None) -> Path:
    """A run folder as src/train.py leaves it: Hydra's config.yaml and a metrics.json."""
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    if metrics is not None:
        text = metrics if isinstance(metrics, str) else json.dumps(metrics)
        (run_dir / "metrics.json").write_text(text)
    return run_dir


def _metrics(alpha: float, size: int, mult_adds: int, acc: float, status: str = "ok") -> dict:
    return {"task": "train", "status": status, "model": "mobilenet_v1", "alpha": alpha,
            "image_size": size, "params": int(2e5 * alpha), "mult_adds": mult_adds,
            "val": {"val/acc_best": acc}, "test": {"test/acc": acc}, "wall_time_s": 1.0,
            "overrides": [f"model.alpha={alpha}", f"data.image_size={size}"]}  # fmt: skip


def test_the_int8_columns_show_where_a_run_has_an_int8_file(
    tmp_path: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    """A PTQ export's record beside its files (``export.json``) and a QAT run's own
    ``metrics.json`` give the int8 columns; a sweep without int8 files has none."""
    from mobilenet_lab.analysis.report_markdown import markdown, report_columns
    from mobilenet_lab.runs.metrics import EXPORTED, metrics_record

    cfg = make_cfg("train", [])
    _fake_run(tmp_path / "0", cfg, _metrics(0.25, 32, 1000, 0.9))
    ptq = _fake_run(tmp_path / "1", cfg, _metrics(0.5, 32, 2000, 0.95))
    exported = metrics_record("export", "export", "ok", {"int8/test_acc": 0.94, "format": "onnx"})
    (ptq / EXPORTED).write_text(json.dumps(exported))
    qat = {**_metrics(0.75, 32, 3000, 0.97), "export": {"int8/test_acc": 0.96,
                                                        "qat/test_acc": 0.97}}  # fmt: skip
    _fake_run(tmp_path / "2", cfg, qat)
    rows = {Path(row["run_dir"]).name: row for row in read_runs([tmp_path])}
    assert "int8/test_acc" not in rows["0"] and rows["1"]["int8/test_acc"] == 0.94
    assert rows["2"]["qat/test_acc"] == 0.97
    columns = report_columns(list(rows.values()))
    assert columns.index("int8/test_acc") == columns.index("test/acc") + 1
    assert "int8 test acc (QAT)" in markdown(list(rows.values()), "t", "cpu")
    assert "int8/test_acc" not in report_columns([rows["0"]])
    assert "int8 test acc" not in markdown([rows["0"]], "t", "cpu")


def test_report_reads_a_mixed_folder_measures_latency_once_and_caches_it(
    tmp_path: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    sweep = tmp_path / "sweep"
    grid = [(0.25, 32, 800_000, 0.9), (0.5, 32, 3_000_000, 0.95), (0.25, 40, 1_250_000, 0.85)]
    for job, (alpha, size, macs, acc) in enumerate(grid):
        cfg = make_cfg("train", [f"model.alpha={alpha}", f"data.image_size={size}"])
        _fake_run(sweep / str(job), cfg, _metrics(alpha, size, macs, acc))
    failed = {"task": "train", "status": "failed", "error": "RuntimeError: no network",
              "model": "mobilenet_v1", "alpha": 1.0, "image_size": 32}  # fmt: skip
    _fake_run(sweep / "3", make_cfg("train"), failed)
    _fake_run(sweep / "4", make_cfg("train"), None)  # killed: Hydra's folder, no metrics.json

    rows = write_report(sweep, read_runs([sweep]), "test report", SPEED)
    assert [r["job"] for r in rows] == ["0", "2", "1", "3", "4"]  # by mult-adds, failed last
    assert [r["pareto"] for r in rows] == ["yes", "", "yes", "", ""]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed", "incomplete"]
    assert all(r["latency_ms_batch_1"] > 0 for r in rows[:3])
    assert "latency_ms_batch_1" not in rows[3]
    assert (sweep / "tradeoff.png").read_bytes()[:8] == PNG_SIGNATURE
    markdown = (sweep / "report.md").read_text()
    assert "| 0 | mobilenet_v1 | 0.25 | 32 |" in markdown
    assert "failed: RuntimeError: no network" in markdown
    with open(sweep / "report.csv") as file:
        assert [r["status"] for r in csv.DictReader(file)] == [r["status"] for r in rows]

    cached = json.loads((sweep / "0" / "latency.json").read_text())
    cached["result"]["latency_ms_batch_1"] = 1234.5  # a second report reads the cache
    (sweep / "0" / "latency.json").write_text(json.dumps(cached))
    again = write_report(sweep, read_runs([sweep]), "test report", SPEED)
    assert again[0]["latency_ms_batch_1"] == 1234.5


def _save_hydra_config(cfg: DictConfig, run_dir: Path) -> None:
    """``.hydra/config.yaml`` as Hydra writes it before the job runs: unresolved, no ``hydra``."""
    job = copy.deepcopy(cfg)
    with open_dict(job):
        del job["hydra"]
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(job, run_dir / ".hydra" / "config.yaml")


def _cached_network(run_dir: Path) -> dict:
    """The network the report timed for ``run_dir``, as its ``latency.json`` describes it."""
    return json.loads(json.loads((run_dir / "latency.json").read_text())["network"])


@pytest.mark.slow
def test_report_on_an_image_folder_run_needs_no_resolver_and_no_data(
    make_cfg: Callable[..., DictConfig], run_main, image_tree: Path, tmp_path: Path, capfd
) -> None:
    """``num_classes`` is ``${count_classes:...}``, which the report script does not register
    and which reads a data folder that may be gone: the checkpoint's resolved config is used.
    The folder has no test/: the console, metrics.json and report.md say it was tested on val/."""
    data_dir = shutil.copytree(image_tree, tmp_path / "images")
    runs, run_dir = tmp_path / "runs", tmp_path / "runs" / "0"
    overrides = ["data=imagefolder", f"data.data_dir={data_dir}", "data.image_size=32",
                 "data.num_workers=0", "data.batch_size=4", *TINY]  # fmt: skip
    cfg = make_cfg("train", overrides, run_dir)
    _save_hydra_config(cfg, run_dir)
    capfd.readouterr()
    train(cfg)
    assert f"Testing on val: {data_dir} has no test split" in "".join(capfd.readouterr())

    (row,) = write_report(runs, read_runs([runs]), "image folder", SPEED)
    assert json.loads((run_dir / "metrics.json").read_text())["test_split"] == "val"
    report = (runs / "report.md").read_text()
    assert "## Tested on val/\n\n`0`: an image folder without test/" in report
    network = _cached_network(run_dir)
    assert network["model"]["num_classes"] == 3 and network["image_size"] == 32
    assert network["model"]["alpha"] == 0.25 and row["latency_ms_batch_1"] > 0
    cached = json.loads((run_dir / "latency.json").read_text())
    cached["result"]["latency_ms_batch_1"] = 1234.5
    (run_dir / "latency.json").write_text(json.dumps(cached))
    shutil.rmtree(data_dir)
    # the same network, from the cache
    (row,) = write_report(runs, read_runs([runs]), "image folder", SPEED)
    assert row["latency_ms_batch_1"] == 1234.5

    result = run_main("scripts/report.py", str(runs))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    with open(runs / "report.csv") as file:
        (saved,) = csv.DictReader(file)
    assert float(saved["latency_ms_batch_1"]) > 0


def test_eval_runs_sharing_the_folder_are_left_out_and_counted(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """``task_name=ablation`` puts eval runs beside the training runs; eval's own config is of
    its default network (alpha 1.0), not the one it scored, and it trained nothing."""
    runs = tmp_path / "ablation" / "runs"
    cfg = make_cfg("train", [*TINY, "data.image_size=32"], runs / "2026-01-01_00-00-00_000001")
    _save_hydra_config(cfg, runs / "2026-01-01_00-00-00_000001")
    trained = train(cfg)
    eval_dir = runs / "2026-01-01_00-00-00_000002"
    overrides = [f"ckpt_path={trained['best_checkpoint']}", "trainer.limit_test_batches=1",
                 "trainer.enable_progress_bar=false"]  # fmt: skip
    cfg = make_cfg("eval", overrides, eval_dir)
    _save_hydra_config(cfg, eval_dir)
    evaluate(cfg)
    assert json.loads((eval_dir / "metrics.json").read_text())["entry_point"] == "eval"

    rows = write_report(runs, read_runs([runs]), "shared folder", SPEED)
    assert [row["job"] for row in rows] == ["2026-01-01_00-00-00_000001"]
    assert rows[0]["pareto"] == "yes" and not (eval_dir / "latency.json").exists()
    markdown = (runs / "report.md").read_text()
    assert "1 eval run (src/eval.py) left out: `2026-01-01_00-00-00_000002`" in markdown
    with open(runs / "report.csv") as file:
        assert len(list(csv.DictReader(file))) == 1


def test_eval_runs_are_known_by_hydra_job_name_or_older_metrics_shape(
    tmp_path: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    runs = tmp_path / "runs"
    _fake_run(runs / "0", make_cfg("train"), _metrics(0.25, 32, 800_000, 0.9))
    older_eval = {"task": "train", "ckpt_path": "/x/best.ckpt", "init_from": None,
                  "model": "mobilenet_v1", "data": "digits", "alpha": 0.25, "image_size": 32,
                  "weights": "averaged", "test": {"test/acc": 0.9}, "wall_time_s": 1.0}  # fmt: skip
    _fake_run(runs / "1", make_cfg("eval"), older_eval)
    _fake_run(runs / "2", make_cfg("eval"), None)  # failed before metrics.json: Hydra's files
    OmegaConf.save({"hydra": {"job": {"name": "eval"}}}, runs / "2" / ".hydra" / "hydra.yaml")
    rows = read_runs([runs])
    assert [row["entry_point"] for row in rows] == [None, "eval", "eval"]
    assert [row["job"] for row in write_report(runs, rows, "kinds", SPEED)] == ["0"]
    assert "2 eval runs (src/eval.py) left out: `1`, `2`" in (runs / "report.md").read_text()


def test_metrics_json_of_schema_1_is_read_upgraded_and_reported(
    tmp_path: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    """Files the kit wrote before ``schema`` (tests/data: a train, a diverged and an eval run
    of f80e6a2), and an older eval file without ``entry_point``, known by its shape: read as
    schema 2 with every key kept, and reported (the eval runs left out, and counted)."""
    runs = tmp_path / "runs"
    old = {kind: json.loads((ROOT / "tests" / "data" / f"metrics_v1_{kind}.json").read_text())
           for kind in ("train", "diverged", "eval")}  # fmt: skip
    older_eval = {k: v for k, v in old["eval"].items() if k != "entry_point"}
    files = [old["train"], old["diverged"], old["eval"], older_eval]
    _fake_run(runs / "0", make_cfg("train"), files[0])  # no checkpoint: the config is timed
    for job, metrics in enumerate(files[1:], start=1):
        (runs / str(job)).mkdir()
        (runs / str(job) / "metrics.json").write_text(json.dumps(metrics))

    rows = read_runs([runs])
    assert [(r["schema"], r["entry_point"], r["status"]) for r in rows] == [
        (SCHEMA, "train", "ok"), (SCHEMA, "train", "diverged"), (SCHEMA, "eval", "ok"),
        (SCHEMA, "eval", "ok")
    ]  # fmt: skip
    for row, metrics in zip(rows, files, strict=True):
        assert flatten(metrics).items() <= row.items() and row["overrides"] == metrics["overrides"]
    reported = write_report(runs, rows, "old files", SPEED)
    assert [(r["job"], r["status"]) for r in reported] == [("0", "ok"), ("1", "diverged")]
    assert reported[0]["latency_ms_batch_1"] > 0
    markdown = (runs / "report.md").read_text()
    assert "`1`: diverged: loss nan at step 3" in markdown.replace(str(runs) + "/", "")
    assert "2 eval runs (src/eval.py) left out: `2`, `3`" in markdown


def test_metrics_json_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"schema": SCHEMA + 1, "status": "ok"}))
    with pytest.raises(ConfigError, match=f"has schema={SCHEMA + 1}: this kit reads"):
        read_metrics(tmp_path)


def test_latency_is_timed_as_the_callers_speed_settings_say(
    tmp_path: Path, make_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report reads no config file of its own: scripts/report.py passes conf/speed/'s
    settings, a sweep its callback's (the same file, as profile's are)."""
    timed = []

    def clock(fn: Callable, repeats: int, warmup: int, device: object) -> float:
        timed.append((repeats, warmup))
        return 0.004

    monkeypatch.setattr("mobilenet_lab.analysis.timing.median_seconds", clock)
    run_dir = _fake_run(tmp_path / "runs" / "0", make_cfg("train"), _metrics(0.25, 32, 8e5, 0.9))
    speed = OmegaConf.create({"batch_size": 2, "repeats": 7, "warmup": 2, "channels_last": False})
    (row,) = write_report(run_dir, read_runs([run_dir]), "speed", speed)
    assert timed == [(7, 2)] and row["latency_ms_batch_1"] == 4.0
    sweep = make_cfg("train").hydra.callbacks.summarise.speed
    assert sweep == make_cfg("profile").speed == SPEED


def test_latency_of_a_keras_initialised_run_is_of_the_network_as_trained(
    tmp_path: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    """``act/padding/bn_eps: null`` with ``init_from=keras:`` trained relu6, tf_same, 1e-3."""
    overrides = ["model.init_from=keras:/moved/mobilenet_2_5_128_tf.h5", "model.alpha=0.25"]
    cfg = make_cfg("train", overrides)
    assert (cfg.model.act, cfg.model.padding, cfg.model.bn_eps) == (None, None, None)
    run_dir = _fake_run(tmp_path / "runs" / "0", cfg, _metrics(0.25, 32, 800_000, 0.9))
    (row,) = write_report(run_dir, read_runs([run_dir]), "keras", SPEED)
    model = _cached_network(run_dir)["model"]
    assert (model["act"], model["padding"], model["bn_eps"]) == ("relu6", "tf_same", 1e-3)
    assert model["init_from"] is None and row["latency_ms_batch_1"] > 0


def test_a_run_whose_network_cannot_be_rebuilt_is_a_row_without_latency(
    tmp_path: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    """No checkpoint, and a config that counts the classes of a data folder that is gone."""
    runs = tmp_path / "runs"
    _fake_run(runs / "0", make_cfg("train"), _metrics(0.25, 32, 800_000, 0.9))
    gone = make_cfg("train", ["data=imagefolder", f"data.data_dir={tmp_path / 'gone'}"])
    _fake_run(runs / "1", gone, _metrics(0.5, 32, 3_000_000, 0.95))
    rows = write_report(runs, read_runs([runs]), "gone", SPEED)
    assert rows[0]["latency_ms_batch_1"] > 0 and "latency_ms_batch_1" not in rows[1]
    markdown = (runs / "report.md").read_text()
    note = f"`{runs / '1'}`: no checkpoint, and {runs / '1' / '.hydra' / 'config.yaml'} does "
    assert (
        f"{note}not resolve: data.data_dir='{tmp_path / 'gone'}' has no train/ folder" in markdown
    )


def test_report_refuses_another_tools_metrics(tmp_path: Path) -> None:
    rows = [{"job": "0", "run_dir": str(tmp_path), "status": "ok", "latency_ms_batch_1": 1.0}]
    with pytest.raises(ValueError, match=r"was not written by src/train\.py"):
        report_rows(rows)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does-not-exist is not a folder"),
        ('{"task": "train", "model": "mobilenet', "is not readable JSON (truncated?)"),
        ('{"model": "mobilenet_v1", "latency_ms_batch_1": 3}', "was not written by src/train.py"),
        ("[1, 2]", "holds a JSON list, not a run's metrics"),
        ('{"schema": 99, "status": "ok"}', "has schema=99: this kit reads"),
        ("", "no runs under"),
    ],
)
def test_report_script_bad_input_is_one_line_and_writes_nothing(
    run_main, tmp_path: Path, content: str | None, message: str
) -> None:
    folder = tmp_path / "does-not-exist"
    if content is not None:
        folder = tmp_path / "runs"
        folder.mkdir()
        if content:
            (folder / "0").mkdir()
            (folder / "0" / "metrics.json").write_text(content)
    result = run_main("scripts/report.py", str(folder))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr
    assert not list(tmp_path.rglob("report*")) and not list(tmp_path.rglob("*.png"))


@pytest.mark.slow
def test_diverged_and_failed_jobs_are_recorded_and_the_others_run(run_main, tmp_path: Path) -> None:
    """lr 1e6 diverges; early stopping on a metric that is never logged fails at run time (a
    RuntimeError in a Lightning hook); the sweep runs every job and ends with the report, a
    short message naming the failed jobs, and exit status 1."""
    stop = "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping"
    result = run_main("src/train.py", "-m", "optimizer.lr=0.05,1e6", stop,
                      "+callbacks.stop.monitor=val/acc,val/never_logged", *TINY,
                      f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").glob("*")
    metrics = {job: json.loads((sweep / job / "metrics.json").read_text()) for job in "0123"}
    assert {job: m["status"] for job, m in metrics.items()} == {
        "0": "ok", "1": "failed", "2": "diverged", "3": "diverged"
    }  # fmt: skip
    assert {(m["schema"], m["entry_point"]) for m in metrics.values()} == {(SCHEMA, "train")}
    assert metrics["1"]["error"].startswith("RuntimeError: Early stopping conditioned on metric")
    diverged = metrics["2"]["error"]
    assert diverged.startswith("loss nan at step") and "(epoch 0), lr 1e+06" in diverged
    assert "Traceback" not in result.stderr
    assert f"3 of 4 jobs failed (report: {sweep})" in result.stderr
    assert f"diverged   {sweep / '2'}  loss nan at step" in result.stderr
    report = (sweep / "report.md").read_text()
    assert "| test acc |" in report and report.count("| ok |") == 1
    assert f"`{sweep / '1'}`: failed: RuntimeError: Early stopping" in report
    assert (sweep / "tradeoff.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.slow
def test_optuna_study_killed_midway_resumes_without_repeating_trials(
    run_main, tmp_path: Path
) -> None:
    """4 tiny trials; the sweep is killed as its third trial starts, and the same command run
    again finishes the study: 4 trials, each finished once, with 4 different parameter sets."""
    command = [sys.executable, "src/train.py", "hparams_search=optuna", *TINY[1:],
               "hydra.sweeper.n_trials=4", "hydra.sweeper.study_name=kill_test",
               f"paths.log_dir={tmp_path}"]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    study_dir = tmp_path / "train" / "optuna" / "kill_test"
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True) as sweep:  # fmt: skip
        deadline = time.time() + 400
        while not list(study_dir.glob("*/2")) and sweep.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        os.killpg(sweep.pid, signal.SIGKILL)
    assert len(list(study_dir.glob("*/*/metrics.json"))) == 2

    result = run_main(*command[1:])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "has 2 finished trial(s): running 2 more" in result.stdout
    with sqlite3.connect(tmp_path / "optuna.db") as db:
        trials = db.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
        params = db.execute("SELECT trial_id, param_name, param_value FROM trial_params").fetchall()
    assert trials == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE"), (3, "COMPLETE")]
    by_trial: dict[int, tuple] = {}
    for trial_id, name, value in sorted(params):
        by_trial[trial_id] = (*by_trial.get(trial_id, ()), (name, value))
    assert len(by_trial) == 4 and len(set(by_trial.values())) == 4
    report = (study_dir / "report.md").read_text()
    assert report.count("| ok |") == 4 and "## Optuna's best trial" in report
