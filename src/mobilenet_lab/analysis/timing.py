"""Timings on this machine: latency and throughput of a network, the report's cached latency
of a trained run, and V1's training speed as the machine's own yardstick."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn

from mobilenet_lab.runs.files import write_json_atomic


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_images_per_second(
    seconds: float, batch_size: int = 128, image_size: int = 32, warmup_steps: int = 2
) -> float:
    """Images/s MobileNet V1 (alpha 1.0, channels-last, SGD) trains at on this CPU: the
    machine's own yardstick, measured beside a benchmark so that its timings carry over."""
    from mobilenet_lab.models import MobileNetV1

    model = MobileNetV1(num_classes=10).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch_size, 3, image_size, image_size)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch_size,))
    done, start = 0, 0.0
    for step in range(warmup_steps + 10_000):
        if step == warmup_steps:
            done, start = 0, time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        done += batch_size
        if step >= warmup_steps and time.perf_counter() - start >= seconds:
            break
    return done / (time.perf_counter() - start)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def measure_speed(
    model: nn.Module,
    image: Tensor,
    speed: DictConfig,
    device: torch.device,
    throughput: bool = True,
) -> dict[str, Any]:
    """Batch-1 latency and (unless ``throughput=False``, as the report needs only latency)
    throughput at ``speed.batch_size`` (images/s), in inference mode, timed as ``speed``
    (``conf/speed/``) says."""
    memory_format = torch.channels_last if speed.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    single = image.to(device, memory_format=memory_format)
    with torch.inference_mode():
        latency = median_seconds(lambda: model(single), speed.repeats, speed.warmup, device)
    timings = {"device": device.type, "latency_ms_batch_1": 1000 * latency}
    if throughput:
        size = speed.batch_size
        batch = single.repeat(size, 1, 1, 1).contiguous(memory_format=memory_format)
        with torch.inference_mode():
            seconds = median_seconds(lambda: model(batch), speed.repeats, speed.warmup, device)
        timings[f"images_per_s_batch_{size}"] = size / seconds
    return timings


def cached_latency(
    run_dir: Path, measured: dict[str, dict[str, Any]], speed: DictConfig
) -> dict[str, Any]:
    """Batch-1 latency of a training run's network on this machine, measured as ``profile``
    does with the caller's ``speed`` settings (``conf/speed/``) at the run's input size and
    classes.

    The network is the one trained (``network.trained_network``: from the checkpoint's
    resolved config); a ConfigError says why when it cannot be known. Kept in the run's
    ``latency.json`` for this machine and network, so a second report does not measure again;
    ``measured`` shares one measurement between runs of the same network.
    """
    from mobilenet_lab.analysis.network import trained_network

    described = trained_network(run_dir)
    model, in_chans, size = described["model"], described["in_chans"], described["image_size"]
    device = torch.device(default_device())
    machine = f"{platform.node()} {device_name(device)}"
    network = json.dumps(described, sort_keys=True)
    cache = run_dir / "latency.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if (cached.get("machine"), cached.get("network")) == (machine, network):
            return cached["result"]
    if network not in measured:
        net = instantiate(model).eval()
        image = torch.randn(1, in_chans, size, size)
        timed = measure_speed(net, image, speed, device, throughput=False)
        measured[network] = {
            "latency_ms_batch_1": timed["latency_ms_batch_1"],
            "latency_device": device_name(device),
        }
    write_json_atomic(cache, {"machine": machine, "network": network, "result": measured[network]})
    return measured[network]


def device_name(device: torch.device) -> str:
    """What the latency was measured on: the GPU's name, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu x{torch.get_num_threads()}"
