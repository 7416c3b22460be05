"""Quantization-aware training (issue 31): ``src/train.py qat=<format> qat.from=<float run>``
fine-tunes the float network as PT2E's fake-quantized graph, freezes its observers and
BatchNorm on schedule, resumes, and ends with its int8 file checked as export checks one, fp32
and post-training int8 beside it; ``src/export.py`` on its checkpoint makes the same file; bad
settings are one line before any run folder."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mobilenet_lab.deploy.formats import FORMATS
from mobilenet_lab.deploy.loading import eval_batches, load_network
from mobilenet_lab.deploy.pt2e import _as_pytorch_computes
from mobilenet_lab.jobs.startup_checks import check_export_config, check_train_config
from mobilenet_lab.runs.checkpoint import load_checkpoint
from mobilenet_lab.runs.errors import ConfigError, Refused
from mobilenet_lab.runs.files import RUN_CONFIG_KEY
from mobilenet_lab.runs.record import RunRecord
from tests.data_files import read_csv, write_digit_pictures

# One xdist worker for the PT2E tests: torchao's pattern graphs are cached per process
pytestmark = pytest.mark.xdist_group("pt2e")

# Two short epochs: BatchNorm frozen from the second, observers from the second
QAT = ["trainer.enable_progress_bar=false", "~callbacks.model_summary", "trainer.max_epochs=2",
       "qat.freeze_bn_epoch=1", "qat.freeze_observers_epoch=1"]  # fmt: skip


@pytest.fixture(scope="module")
def qat_run(learned_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python src/train.py qat=executorch qat.from=<float run>``'s run, in this process (its
    int8 file left to ``src/export.py`` here: the LiteRT one, made at the run's end, is
    tests/test_scripts.py's QAT benchmark smoke run; the command's start-up checks:
    ``test_a_bad_qat_command_stops_before_any_run_folder``)."""
    from mobilenet_lab.train import train
    from tests.conftest import compose_cfg

    run_dir = tmp_path_factory.mktemp("qat_run")
    overrides = ["qat=executorch", f"qat.from={learned_run}", *QAT, "qat.export=false"]
    train(compose_cfg("train", overrides, run_dir))
    return run_dir


def qat_network(checkpoint_path: Path) -> tuple[nn.Module, DictConfig]:
    checkpoint = load_checkpoint(str(checkpoint_path))
    cfg = OmegaConf.create(RunRecord.of(checkpoint).config)
    return load_network(cfg, checkpoint, "averaged"), cfg


def file_accuracy_and_agreement(model, net: nn.Module, cfg: DictConfig) -> tuple[float, float]:
    """The file's test accuracy, and the share of test images where its class is the QAT
    network's in PyTorch."""
    from hydra.utils import instantiate

    correct = agree = total = 0
    for images, labels in eval_batches(instantiate(cfg.data), "test"):
        predicted = model.logits(images).argmax(1)
        with torch.inference_mode():
            agree += int((net(images).argmax(1) == predicted).sum())
        correct += int((predicted == labels).sum())
        total += len(labels)
    return correct / total, agree / total


@pytest.mark.slow
def test_export_of_a_qat_run_writes_its_checked_int8_file_with_fp32_and_ptq_beside_it(
    qat_run: Path, run_main, tmp_path: Path
) -> None:
    best = qat_run / "checkpoints" / "best.ckpt"
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    # The gate at 0.95: a 2-epoch fine-tune of this tiny network moves by 2 points with the
    # machine's float rounding (89.8-92.7% for a fp32 92.2% here); the gate has its own test
    done = run_main("src/export.py", f"ckpt_path={best}", logs, "speed.repeats=1",
                    "speed.warmup=0", "calibration_images=16", "check_images=8",
                    "int8_min_ratio=0.95")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "qat/test_acc" in done.stdout  # the console table
    (record,) = (tmp_path / "logs").glob("export/runs/*/metrics.json")
    report = json.loads(record.read_text())
    assert report["format"] == "executorch"  # the format the run trained for
    assert report["files"] == [str(qat_run / "model.int8.pte")]
    assert not list(qat_run.glob("*.tmp*"))  # the fp32 and PTQ files were only compared
    for name in ("fp32", "int8", "qat"):  # the same test images, each file's batch-1 latency
        assert 0.5 < report[f"{name}/test_acc"] <= 1, name
        assert report[f"executorch_{name}/latency_ms_batch_1"] > 0, name
    assert report["qat/test_acc"] >= 0.95 * report["fp32/test_acc"]  # the gate it passed
    beside = json.loads((qat_run / "export.json").read_text())  # the sweep report reads it
    assert beside["qat/test_acc"] == report["qat/test_acc"]
    # The file in its own runtime against the QAT network in PyTorch, on every test image
    # (a wrong conversion agrees on about a tenth; this tiny network's margins are small)
    net, cfg = qat_network(best)
    pte = FORMATS["executorch"].open(str(qat_run / "model.int8.pte"))
    assert pte.preprocessing.image_size == 32
    accuracy, agreement = file_accuracy_and_agreement(pte, net, cfg)
    assert agreement >= 0.97
    assert accuracy == pytest.approx(report["qat/test_acc"])
    assert report["qat/top1_agreement"] == pytest.approx(agreement)
    # src/predict.py on the file and on the QAT checkpoint: the same classes (one of six may
    # differ, as the file and the network part on a few images in a hundred, above)
    pictures = write_digit_pictures(tmp_path / "pictures", 6)
    rows = {}
    for name, path in (("ckpt", best), ("file", qat_run / "model.int8.pte")):
        done = run_main("src/predict.py", f"ckpt_path={path}", f"input={pictures}",
                        f"hydra.run.dir={tmp_path / name}")  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        rows[name] = [row["label_1"] for row in read_csv(tmp_path / name / "predictions.csv")]
    assert len(rows["file"]) == 6
    assert sum(a == b for a, b in zip(rows["file"], rows["ckpt"], strict=True)) >= 5


@pytest.mark.slow
def test_a_qat_sweep_fine_tunes_each_setting_in_its_own_job(
    learned_run: Path, run_main, tmp_path: Path
) -> None:
    """QAT x sweeps: ``-m qat.per_channel=true,false`` (Hydra's launcher, one process): a job
    for each, from the same float run, with its own weight scales, and the sweep's summary."""
    result = run_main("src/train.py", "-m", "qat=tflite", f"qat.from={learned_run}",
                      "qat.per_channel=true,false", "debug=limit", "qat.export=false",
                      "qat.freeze_bn_epoch=1", "qat.freeze_observers_epoch=1",
                      "trainer.enable_progress_bar=false", "~callbacks.model_summary",
                      f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "qat" / "multiruns").glob("*")
    scale_sizes = []
    for job in ("0", "1"):
        record = json.loads((sweep / job / "metrics.json").read_text())
        assert record["qat_from"] == str(learned_run)
        weights = load_checkpoint(str(sweep / job / "checkpoints" / "last.ckpt"))["state_dict"]
        scale_sizes.append(max(v.numel() for k, v in weights.items() if k.endswith(".scale")))
    assert scale_sizes[0] > 1 and scale_sizes[1] == 1  # per channel, then per tensor
    assert (sweep / "summary.csv").is_file() and "multirun summary" in result.stdout


@pytest.mark.slow
def test_observers_and_batchnorm_freeze_on_schedule_and_stay_frozen_in_the_checkpoint(
    qat_run: Path, learned_run: Path
) -> None:
    last = qat_run / "checkpoints" / "last.ckpt"
    weights = load_checkpoint(str(last))["state_dict"]
    assert bool(weights["net.bn_frozen"]) and bool(weights["net.observers_frozen"])
    # Every observer observed in the first epoch (a scale from real ranges, none infinite)
    ranges = [v for k, v in weights.items() if k.endswith(("min_val", "max_val"))]
    assert ranges and all(torch.isfinite(v).all() for v in ranges)
    # Reloaded in training mode: its fake quantizers no longer observe, and BatchNorm
    # normalises with its running statistics (an image's logits do not depend on its batch)
    net, cfg = qat_network(last)
    net.train()
    image = torch.randn(1, 1, 32, 32)
    alone, in_batch = net(image), net(torch.cat([image, torch.randn(7, 1, 32, 32)]))[:1]
    observers = [m for m in net.modules() if hasattr(m, "observer_enabled")]
    assert observers and all(int(m.observer_enabled) == 0 for m in observers)
    torch.testing.assert_close(alone, in_batch, rtol=1e-4, atol=1e-4)
    assert cfg.qat["from"] == str(learned_run)


@pytest.mark.slow
def test_a_qat_run_resumes_frozen_as_recorded(qat_run: Path, run_main) -> None:
    last = qat_run / "checkpoints" / "last.ckpt"
    before = load_checkpoint(str(last))["state_dict"]
    done = run_main("src/train.py", f"ckpt_path={last}", "trainer.max_epochs=3")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((qat_run / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["segments"] == 2 and metrics["status"] == "ok"
    after = load_checkpoint(str(last))["state_dict"]
    assert bool(after["net.bn_frozen"]) and bool(after["net.observers_frozen"])
    key = next(k for k in after if k.endswith("weight") and after[k].dim() == 4)
    assert not torch.equal(before[key], after[key])  # a third epoch trained
    scales = [k for k in after if k.endswith(".scale")]  # observers frozen: the same scales
    assert scales and all(torch.equal(before[k], after[k]) for k in scales)


@pytest.mark.slow
def test_export_takes_no_other_format_for_a_qat_run(qat_run: Path, make_cfg) -> None:
    best = qat_run / "checkpoints" / "best.ckpt"
    cfg = make_cfg("export", [f"ckpt_path={best}", "format=onnx"])
    with pytest.raises(ConfigError, match=r"^format=onnx is not the format this quantization"):
        check_export_config(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["qat=executorch"], "qat.from is not set: give the float run to fine-tune"),
        (["qat=executorch", "qat.format=onnx"], "qat.format=onnx is not valid: its int8 file"),
        (["qat=executorch", "qat.format=coreml"], "qat.format='coreml' is not valid"),
        (["qat=executorch", "qat.freeze_observers_epoch=3"],
         "qat.freeze_observers_epoch=3 is beyond the fine-tune's trainer.max_epochs=3"),
        (["qat=tflite", "qat.freeze_bn_epoch=5", "trainer.max_epochs=2",
          "qat.freeze_observers_epoch=1"],
         "qat.freeze_bn_epoch=5 is beyond the fine-tune's trainer.max_epochs=2"),
        (["qat=executorch", "qat.freeze_bn_epoch=-1"], "qat.freeze_bn_epoch=-1 is not valid"),
        (["qat=executorch", "callbacks=ema"], "callbacks=ema with qat=executorch is not valid"),
    ],
)  # fmt: skip
def test_bad_qat_settings_are_one_line(
    overrides: list[str], message: str, learned_run: Path, make_cfg
) -> None:
    if "qat.from" not in " ".join(overrides) and "not set" not in message:
        overrides = [*overrides, f"qat.from={learned_run}"]
    with pytest.raises(ConfigError) as error:
        check_train_config(make_cfg("train", overrides), hardware=False)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_qat_from_a_file_of_another_tool_or_a_qat_run_is_refused(
    tmp_path: Path, learned_run: Path, make_cfg
) -> None:
    other = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(ConfigError, match=r"^qat.from='.*weights.pt' is a PyTorch file but not"):
        check_train_config(make_cfg("train", ["qat=executorch", f"qat.from={other}"]))
    # A QAT run's checkpoint: the float run it came from is named
    checkpoint = torch.load(learned_run, weights_only=False)
    record = RunRecord.of(checkpoint)
    record.config["qat"] = {"from": "/runs/float/best.ckpt", "format": "executorch"}
    checkpoint[RUN_CONFIG_KEY] = record.stored()
    torch.save(checkpoint, qat_ckpt := tmp_path / "qat.ckpt")
    with pytest.raises(ConfigError, match=r"qat\.from=/runs/float/best\.ckpt$"):
        check_train_config(make_cfg("train", ["qat=executorch", f"qat.from={qat_ckpt}"]))


@pytest.mark.parametrize("file_format", ["executorch", "tflite"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_weights_are_fake_quantized_per_channel_or_per_tensor(
    file_format: str, per_channel: bool
) -> None:
    from mobilenet_lab.models import build_mobilenet_v1

    net = build_mobilenet_v1(alpha=0.25, num_classes=10, in_chans=1)
    qat = FORMATS[file_format].qat_network(net, torch.zeros(2, 1, 32, 32), per_channel)
    qat.train()(torch.randn(4, 1, 32, 32))
    # the weight fake quantizers: one scale per output channel, or one for the tensor
    channels = {conv.weight.shape[0] for conv in net.modules() if isinstance(conv, nn.Conv2d)}
    sizes = {m.scale.numel() for m in qat.modules() if hasattr(m, "observer_enabled")}
    assert (channels <= sizes) is per_channel
    assert 1 in sizes  # the activations: one scale each either way
    # activations (int8 from -128: weights are symmetric, from -127) observed by histogram, as
    # post-training calibration observes them, not by a moving min-max
    observers = {type(m.activation_post_process).__name__ for m in qat.modules()
                 if hasattr(m, "observer_enabled") and m.quant_min == -128}  # fmt: skip
    assert observers == {"HistogramObserver"}


def test_the_converted_graph_computes_what_the_qat_network_trained(monkeypatch) -> None:
    # timm's V2 blocks in small (ReLU6 after BatchNorm, a residual sum, a classifier), one
    # filter's weights all of one sign: the file's int8 weights are symmetric, zero point 0
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
    block[0].weight.data[0].abs_()

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.block = nn.Conv2d(1, 8, 3, padding=1), block
            self.head = nn.Linear(8, 10)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            features = self.stem(images)
            return self.head((features + self.block(features)).mean((2, 3)))

    qat = FORMATS["executorch"].qat_network(Residual(), torch.zeros(2, 1, 8, 8), True)
    images = torch.randn(32, 1, 8, 8)
    qat.eval()(images)  # before any training step, as Lightning's sanity check runs it
    qat.train()(images)
    qat.freeze_observers()
    qat.freeze_bn()
    with torch.no_grad():
        trained = qat.eval()(images)
        converted = qat.converted(fold_quantize=True)
        # the network as computed with float biases and averages: what PyTorch's int8 graph
        # computes (the runtimes' rounding of both is the network's alone, tested below)
        float_biases = _as_pytorch_computes(copy.deepcopy(qat.graph))(images)
    torch.testing.assert_close(converted(images), float_biases, rtol=0, atol=1e-5)
    per_channel_weights = [
        node for node in converted.graph.nodes if "dequantize_per_channel" in str(node.target)
    ]
    assert len(per_channel_weights) == 3  # two convolutions, a linear
    for weights in per_channel_weights:
        assert not getattr(converted, weights.args[2].target).any()  # zero points
    # Again in this process: the network is exported, torchao's pattern graphs are not (they
    # come from the cache), and the conversion gives the same graph
    exports, export = [], torch.export.export

    def counted(*args: object, **kwargs: object) -> object:
        exports.append(args)
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.export, "export", counted)
    again = FORMATS["executorch"].qat_network(Residual(), torch.zeros(2, 1, 8, 8), True)
    again.load_state_dict(qat.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again.converted(True)(images), float_biases, rtol=0, atol=1e-5)
        torch.testing.assert_close(again.eval()(images), trained, rtol=0, atol=1e-5)
    assert len(exports) == 1


def _step(outputs: torch.Tensor) -> float:
    """The int8 step of fake-quantized ``outputs``: the smallest gap between their values."""
    return float(outputs.unique().diff().min())


@pytest.mark.parametrize("file_format", ["executorch", "tflite"])
@pytest.mark.parametrize("pooled", [False, True])
def test_the_qat_network_computes_as_its_int8_file_output_for_output(
    file_format: str, pooled: bool, tmp_path: Path
) -> None:
    # XNNPACK (under both runtimes) holds a bias in int32 at steps of input x weight scale and
    # averages int8 values exactly (a 2 x 2 average is a tie on a quarter of its outputs):
    # PyTorch's int8 graph, computing both in float, puts some outputs a step off the file, the
    # network none
    from mobilenet_lab.deploy.preprocessing import RESIZE_WHOLE, Preprocessing

    torch.manual_seed(0)

    def norm(channels: int) -> nn.BatchNorm2d:
        norm = nn.BatchNorm2d(channels)
        with torch.no_grad():  # a trained layer's: biases worth rounding
            norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2)
            norm.weight.uniform_(0.5, 2), norm.bias.uniform_(-1, 1)
        return norm

    class Block(nn.Module):  # conv + BatchNorm, depthwise + BatchNorm, a sum, conv with a bias
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), norm(16),
                                      nn.ReLU())  # fmt: skip
            self.depthwise = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), norm(16))
            self.pointwise = nn.Conv2d(16, 16, 1)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            features = self.stem(images)
            features = self.pointwise(features + self.depthwise(features))
            if pooled:  # the two averages of timm's and this kit's networks
                pool = nn.functional.adaptive_avg_pool2d(features, 1)
                return pool + features.mean((2, 3), keepdim=True)
            return features

    size, count = (2, 256) if pooled else (8, 64)
    fmt = FORMATS[file_format]
    qat = fmt.qat_network(Block(), torch.zeros(2, 1, size, size), True)
    qat.train()(torch.randn(32, 1, size, size))
    qat.freeze_observers()
    qat.freeze_bn()
    images = torch.randn(count, 1, size, size)
    prep = Preprocessing(RESIZE_WHOLE, size, 1, (0.5,), (0.25,), None, alpha=1.0)
    fmt.write_qat(qat, prep, images[:1], path := tmp_path / f"model{fmt.suffix}")
    with torch.no_grad():
        network, graph = qat.eval()(images), qat.converted(fmt.fold_quantize)(images)
    outputs = fmt.open(str(path)).logits(images).reshape(network.shape)
    step = _step(network)

    def steps_off(computed: torch.Tensor) -> int:
        return int(((computed - outputs).abs() > step / 2).sum())

    assert steps_off(network) == 0
    assert steps_off(graph) > 10  # of 4096 or 65536 outputs: what the network adds matters


def test_torchaos_conv_batchnorm_passes_run_only_for_the_convolutions_the_graph_holds() -> None:
    # Each pass exports its patterns for conv1d, conv2d and both transposed convolutions: a
    # MobileNet's graph (conv2d alone) skips three of the four, its pass for conv2d runs
    from torch.nn import functional

    from mobilenet_lab.deploy.pt2e import _for_present_convs

    ran = []
    passes = _for_present_convs(lambda graph, conv, *_: ran.append(conv.__name__) or graph)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()
    graph = torch.export.export(net, (torch.zeros(1, 1, 4, 4),)).module()
    convs = (functional.conv1d, functional.conv2d, functional.conv_transpose1d,
             functional.conv_transpose2d)  # fmt: skip
    assert all(passes(graph, conv, (), False) is graph for conv in convs)
    assert ran == ["conv2d"]
    passes(graph, lambda *_: None, (), False)  # not an aten op's namesake: run, to be safe
    assert ran == ["conv2d", "<lambda>"]


def test_a_channel_batchnorm_saw_constant_keeps_its_bias_in_the_int8_file(tmp_path: Path) -> None:
    """A depthwise channel whose input never fires (running variance 0, as trained timm V2s
    have): BatchNorm folded 316x into its weights, and XNNPACK's int32 bias, at steps of input
    x weight scale, lost what it adds on every image, or (here, larger) XNNPACK would not load
    the file (``xnn_status_unsupported_parameter``). Zeroed, the network is the same and the
    file computes its int8 graph."""
    from mobilenet_lab.deploy.executorch import PteModel, write_pte, xnnpack_quantizer
    from mobilenet_lab.deploy.preprocessing import RESIZE_WHOLE, Preprocessing
    from mobilenet_lab.deploy.pt2e import pt2e_int8, without_constant_channels

    torch.manual_seed(0)
    depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), depthwise, nn.BatchNorm2d(4),
                        nn.ReLU(), nn.Conv2d(4, 8, 1), nn.Flatten(),
                        nn.Linear(8 * 64, 10))  # fmt: skip
    with torch.no_grad():
        net[0].weight[0], net[0].bias[0] = 0, -1  # channel 0 never fires: its input is 0
        net[2].weight[0] = 300  # no gradient ever reached it, nor weight decay
        net[3].running_var[0], net[3].running_mean[0], net[3].bias[0] = 0, 0, 1.5
    images = torch.rand(64, 1, 8, 8)
    fixed = without_constant_channels(net.eval(), images[:1])
    torch.testing.assert_close(fixed(images), net(images), rtol=0, atol=0)
    assert not fixed[2].weight[0].any() and net[2].weight[0].eq(300).all()  # a copy changed
    quantizer = xnnpack_quantizer(per_channel=True, qat=False)
    converted = pt2e_int8(net, images[:1], quantizer, [images])
    prep = Preprocessing(RESIZE_WHOLE, 8, 1, (0.5,), (0.25,), None, alpha=1.0)
    write_pte(converted, prep, images[:1], path := tmp_path / "model.pte", quantizer)
    with torch.no_grad():
        graph = torch.cat([converted(image) for image in images.split(1)])
    torch.testing.assert_close(PteModel(str(path)).logits(images), graph, rtol=0, atol=0.05)


def test_a_qat_file_that_does_not_predict_as_its_network_is_refused() -> None:
    from mobilenet_lab.export import QAT_MIN_AGREEMENT, conversion_refusal

    report = {"qat/top1_agreement": 0.6489, "int8/test_images": 450}
    refusal = conversion_refusal(report)
    assert refusal.startswith("quantization-aware int8 file refused: it gives the QAT network's")
    assert "64.89% of the 450 test images" in refusal and "\n" not in refusal
    assert conversion_refusal({**report, "qat/top1_agreement": QAT_MIN_AGREEMENT}) is None


def test_a_network_the_quantizer_cannot_take_is_refused_in_one_line() -> None:
    class Branchy(nn.Module):  # control flow on a tensor's value: torch.export cannot trace it
        def forward(self, images):
            return images.mean((2, 3)) if images.sum() > 0 else images.amax((2, 3))

    with pytest.raises(Refused) as error:
        FORMATS["executorch"].qat_network(Branchy(), torch.zeros(2, 1, 8, 8), True)
    assert str(error.value).startswith(
        "qat.format=executorch: preparing the network for quantization-aware training failed"
    )
    assert "nothing was trained" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_a_bad_qat_command_stops_before_any_run_folder(learned_run: Path, run_main, tmp_path):
    logs = tmp_path / "logs"
    done = run_main("src/train.py", "qat=executorch", f"qat.from={learned_run}",
                    "qat.freeze_bn_epoch=9", f"paths.log_dir={logs}")  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "qat.freeze_bn_epoch=9 is beyond" in line
    assert not logs.exists()
