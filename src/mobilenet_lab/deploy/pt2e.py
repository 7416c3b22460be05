"""int8 for the phone runtimes: PyTorch 2 Export quantization (``torchao``'s PT2E) with the
runtime's own quantizer (XNNPACK's for ExecuTorch, LiteRT's for ``.tflite``), int8 weights per
channel (or per tensor) and int8 activations. Post-training (``pt2e_int8``): activations
calibrated on training images in the run's eval preprocessing. Quantization-aware
(``QatNetwork``): the network fine-tuned with fake quantization, its scales learned in
training, then converted the same way."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

# The quantizer of a format's runtime: (per_channel, qat) -> a PT2E ``Quantizer``
QuantizerFactory = Callable[[bool, bool], Any]
BATCH_NORM, DROPOUT = torch.ops.aten.batch_norm.default, torch.ops.aten.dropout.default
WEIGHTED = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)
MEAN, POOL = torch.ops.aten.mean.dim, torch.ops.aten.adaptive_avg_pool2d.default
DIV, ADD = torch.ops.aten.div.Tensor, torch.ops.aten.add.Tensor
TRAINING_ARGUMENT = {BATCH_NORM: 5, DROPOUT: 2}  # where each op takes its ``training`` flag


def pt2e_int8(
    net: nn.Module,
    example: Tensor,
    quantizer: Any,
    batches: Iterable[Tensor],
    fold_quantize: bool = True,
) -> nn.Module:
    """The eval network exported, observed by ``quantizer`` on ``batches`` one image at a time
    (the files take batch 1), and converted to int8 quantize / dequantize pairs, which the
    runtime's lowering turns into int8 kernels."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    _lighten_torchao_passes()
    net = without_constant_channels(net.eval(), example)
    graph = torch.export.export(net, (example,)).module()
    prepared = prepare_pt2e(graph, quantizer)
    _set_training(prepared, False, bn_training=False)
    with torch.no_grad():
        for images in batches:
            for image in images.split(1):
                prepared(image.contiguous())
    return _converted(prepared, fold_quantize)


def without_constant_channels(net: nn.Module, example: Tensor) -> nn.Module:
    """A copy of ``net`` in which a convolution channel that fed its BatchNorm a constant in
    training (running variance under 1e-6: a dead input, as a ReLU that never fires) has zero
    weights, its BatchNorm's running mean moved to the constant left (the convolution's bias, or
    0): the same outputs, as BatchNorm then gives its beta there. Folded as it was, BatchNorm's
    1/sqrt(eps) (316x at eps 1e-5) made that channel's int8 weight scale huge, and XNNPACK
    stores the bias in int32 at steps of input scale x weight scale: a timm V2 0.35 lost 1.2 of
    a bias there, on every image (its int8 files scored 86% where the PyTorch int8 graph scored
    97%), and larger such weights make XNNPACK refuse to load the file."""
    net = copy.deepcopy(net)
    outputs: dict[int, tuple[nn.Conv2d, Tensor]] = {}  # the tensors held: no id is reused
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def conv_output(conv: nn.Module, _: Any, output: Tensor) -> None:
        outputs[id(output)] = (conv, output)

    def norm_input(norm: nn.Module, args: tuple[Tensor, ...]) -> None:
        if id(args[0]) in outputs:
            pairs.append((outputs[id(args[0])][0], norm))

    modules = list(net.modules())
    convs = [m.register_forward_hook(conv_output) for m in modules if isinstance(m, nn.Conv2d)]
    norms = [m.register_forward_pre_hook(norm_input) for m in modules
             if isinstance(m, nn.BatchNorm2d)]  # fmt: skip
    with torch.no_grad():
        net(example)
        for hook in convs + norms:
            hook.remove()
        for conv, norm in pairs:
            constant = norm.running_var < 1e-6
            if constant.any():
                conv.weight[constant] = 0
                norm.running_mean[constant] = 0 if conv.bias is None else conv.bias[constant]
    return net


def _converted(prepared: nn.Module, fold_quantize: bool) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    converted = convert_pt2e(prepared, fold_quantize=fold_quantize)
    _set_training(converted, False, bn_training=False)
    return converted


class QatNetwork(nn.Module):
    """A float network as PT2E's quantization-aware graph (``prepare_qat_pt2e`` with the
    runtime's quantizer): fake-quantized weights and activations, BatchNorm still training
    (folded into the convolution as the converted file has it), a dynamic batch size.

    An exported graph ignores ``nn.Module.train``: its mode is set here, in ``forward``, from
    ``self.training`` (Lightning restores a module's mode after validation by setting
    ``training`` itself, so ``train()`` alone would not see it). Training: observers and
    BatchNorm's statistics update unless frozen; eval: neither (the observers would otherwise
    go on observing validation and test images). ``freeze_observers`` keeps the scales learned
    so far, ``freeze_bn`` BatchNorm's running statistics (torchvision's QAT recipe, after a few
    epochs each); both flags are buffers, so a resumed run and a reloaded checkpoint keep them."""

    def __init__(
        self, net: nn.Module, example: Tensor, quantizer: QuantizerFactory, per_channel: bool
    ) -> None:
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

        super().__init__()
        self.quantizer = quantizer(per_channel, True)
        _lighten_torchao_passes()
        batch = torch.export.Dim("batch", min=1)
        net = without_constant_channels(net.eval(), example.contiguous())
        net = net.train().to(memory_format=torch.contiguous_format)
        graph = torch.export.export(net, (example.contiguous(),), dynamic_shapes=({0: batch},))
        self.graph = prepare_qat_pt2e(graph.module(), self.quantizer)
        _compute_as_runtimes(self.graph)
        self._size_scales(example.contiguous())
        self.register_buffer("observers_frozen", torch.tensor(False))
        self.register_buffer("bn_frozen", torch.tensor(False))
        self._frozen = (False, False)  # the two buffers, read without a device sync
        self._applied: tuple[bool, bool, bool] | None = None  # the graph's mode
        self.register_load_state_dict_post_hook(_read_loaded_flags)

    def _size_scales(self, example: Tensor) -> None:
        """One observed forward (BatchNorm's statistics untouched), then the observers emptied:
        the per-channel fake quantizers hold a scale per channel from the start, so the network
        runs in eval before it has trained (Lightning's sanity check) as after."""
        from torchao.quantization.pt2e import FakeQuantizeBase

        _set_training(self.graph, True, bn_training=False)
        with torch.no_grad():
            self.graph(example)
        for module in self.graph.modules():
            if isinstance(module, FakeQuantizeBase):
                _empty(module.activation_post_process)

    def train(self, mode: bool = True) -> QatNetwork:
        """``training`` alone (the exported graph refuses ``train()``): ``forward`` applies it."""
        self.training = mode
        return self

    def forward(self, images: Tensor) -> Tensor:
        mode = (self.training, *self._frozen)
        if mode != self._applied:
            self._set_mode(*mode)
        return self.graph(images.contiguous())

    def _set_mode(self, training: bool, observers_frozen: bool, bn_frozen: bool) -> None:
        from torchao.quantization.pt2e import disable_observer, enable_observer

        observing = training and not observers_frozen
        self.graph.apply(enable_observer if observing else disable_observer)
        _set_training(self.graph, training, bn_training=training and not bn_frozen)
        self._applied = (training, observers_frozen, bn_frozen)

    def freeze_observers(self) -> None:
        """Fake quantization goes on with the scales observed so far."""
        self.observers_frozen.fill_(True)
        self._frozen = (True, self._frozen[1])

    def freeze_bn(self) -> None:
        """BatchNorm normalises with its running statistics from now on, in training too."""
        self.bn_frozen.fill_(True)
        self._frozen = (self._frozen[0], True)

    def converted(self, fold_quantize: bool) -> nn.Module:
        """The int8 graph (quantize / dequantize pairs with the learned scales) the runtime's
        lowering takes, as the post-training path gives it; this network is left as it is."""
        return _converted(_as_pytorch_computes(copy.deepcopy(self.graph)), fold_quantize)


def runtime_bias_rounding(
    output: Tensor,
    input_scale: Tensor,
    weight_scale: Tensor,
    bias: Tensor | None,
    *norm: Any,
) -> Tensor:
    """``output`` of a convolution or linear layer whose bias (BatchNorm folded in: ``norm``,
    its weight, bias, running mean and variance and eps) is rounded as the int8 runtimes hold
    it: int32 at steps of input scale x weight scale (XNNPACK, LiteRT and ONNX Runtime alike).
    Added straight through: the gradient is the float layer's."""
    if norm:
        weight, shift, mean, variance, eps = norm  # weight and shift None: affine=False
        bias = mean.new_zeros(mean.shape) if bias is None else bias.reshape(-1)
        scale = torch.rsqrt(variance + eps) * (1 if weight is None else weight)
        bias = (bias - mean) * scale + (0 if shift is None else shift)
    steps = (input_scale * weight_scale).detach()
    rounding = torch.round(bias.detach() / steps) * steps - bias.detach()
    return output + rounding.view(1, -1, *[1] * (output.dim() - 2)).to(output.dtype)


def runtime_mean_rounding(
    output: Tensor,
    input_scale: Tensor,
    input_zero_point: Tensor,
    output_scale: Tensor,
    output_zero_point: Tensor,
    inputs: Tensor,
) -> Tensor:
    """``output``, the global average of fake-quantized ``inputs``, as XNNPACK computes it:
    the stored int8 values' exact mean (a float32 sum of integers is exact), requantized and
    rounded once, half to even. Averaged in float, an exact tie (2 x 2 pooling: a quarter of
    the outputs) fell either way. Added straight through."""
    stored = torch.round(inputs.detach().float() / input_scale) + input_zero_point  # not bf16
    mean = stored.mean((-2, -1), keepdim=True).reshape(output.shape)
    ratio = input_scale / output_scale
    rounded = torch.round(mean * ratio + (output_zero_point - input_zero_point * ratio))
    exact = ((rounded - output_zero_point) * output_scale).to(output.dtype)
    return output + (exact - output.detach())


RUNTIME_ARITHMETIC = (runtime_bias_rounding, runtime_mean_rounding)


def _compute_as_runtimes(graph: torch.fx.GraphModule) -> None:
    """The fake-quantized graph made to compute as the int8 runtimes do where PyTorch's float
    emulation parts from them: each convolution or linear layer's bias (its own, or its
    BatchNorm's) rounded to int32 (``runtime_bias_rounding``, after BatchNorm where torchao's
    QAT pattern keeps one), and a global average of int8 values rounded once from the exact
    integer mean (``runtime_mean_rounding``). Without them the files parted from their network
    where an output lay near a rounding edge: a timm V3-small's ``.tflite`` gave its network's
    class on 98.9% of the test images (measured in docs/deployment.md)."""
    from torchao.quantization.pt2e import FakeQuantizeBase

    def fake_quantized(node: Any) -> bool:  # (a shared one is named once in named_modules)
        return node.op == "call_module" and isinstance(
            graph.get_submodule(node.target), FakeQuantizeBase
        )

    def insert_after(node: Any, function: Callable, attributes: list[str], *extra: Any) -> None:
        """``function(node, *<the fake quantizers' attributes>, *extra)`` in place of ``node``."""
        with graph.graph.inserting_after(node):
            computed = graph.graph.call_function(function)
        with graph.graph.inserting_before(computed):
            held = [graph.graph.get_attr(attribute) for attribute in attributes]
        node.replace_all_uses_with(computed)
        computed.args = (node, *held, *extra)

    for node in list(graph.graph.nodes):
        if (
            node.target in WEIGHTED
            and fake_quantized(node.args[0])
            and fake_quantized(node.args[1])
        ):
            scales = [f"{quantized.target}.scale" for quantized in node.args[:2]]
            norm, bias_add = _batch_norm_after(node)
            if norm is not None:
                bias = bias_add.args[1] if bias_add is not None else None
                insert_after(norm, runtime_bias_rounding, scales, bias, *norm.args[1:5],
                             norm.args[7])  # fmt: skip
            elif len(node.args) > 2 and node.args[2] is not None:
                insert_after(node, runtime_bias_rounding, scales, node.args[2])
        elif _is_global_average(node) and fake_quantized(node.args[0]):
            user = _only_user(node)
            if user is not None and fake_quantized(user):
                grids = [f"{quantized.target}.{attribute}" for quantized in (node.args[0], user)
                         for attribute in ("scale", "zero_point")]  # fmt: skip
                insert_after(node, runtime_mean_rounding, grids, node.args[0])
    graph.recompile()


def _is_global_average(node: Any) -> bool:
    """Adaptive pooling to 1 x 1, or a mean over the spatial axes of an image batch that keeps
    them (timm's squeeze-and-excite): the int8 averages XNNPACK takes. (Without ``keepdim``
    ExecuTorch leaves the mean to its portable kernel, which averages in float.)"""
    if node.target is POOL:
        return list(node.args[1]) == [1, 1]
    value = node.meta.get("val")
    if node.target is not MEAN or value is None or len(node.args) < 3 or not node.args[2]:
        return False
    return value.dim() == 4 and sorted(axis % 4 for axis in node.args[1]) == [2, 3]


def _batch_norm_after(layer: Any) -> tuple[Any, Any]:
    """torchao's QAT conv + BatchNorm pattern after ``layer``: conv -> div (the weight's
    BatchNorm scale undone) -> [add the conv's bias] -> batch_norm; the batch_norm node and the
    bias add (or None), or (None, None) where the layer has no BatchNorm."""
    div = _only_user(layer)
    following = _only_user(div) if div is not None and div.target is DIV else None
    bias_add = following if following is not None and following.target is ADD else None
    norm = _only_user(bias_add) if bias_add is not None else following
    return (norm, bias_add) if norm is not None and norm.target is BATCH_NORM else (None, None)


def _only_user(node: Any) -> Any:
    """The one node that takes ``node``'s output, or None."""
    return next(iter(node.users)) if len(node.users) == 1 else None


def _as_pytorch_computes(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``graph`` without what ``_compute_as_runtimes`` added: the converted graph holds the
    float biases and averages, which the runtime's lowering turns into its own arithmetic."""
    for node in [n for n in graph.graph.nodes if n.target in RUNTIME_ARITHMETIC]:
        arguments = node.args
        node.replace_all_uses_with(arguments[0])
        graph.graph.erase_node(node)
        for held in arguments[1:]:  # the fake quantizers' attributes it alone read
            if getattr(held, "op", None) == "get_attr" and not held.users:
                graph.graph.erase_node(held)
    graph.recompile()
    return graph


def _lighten_torchao_passes() -> None:
    """torchao's conv / BatchNorm passes made cheaper, their results unchanged. Each pass
    ``torch.export``s its pattern graphs anew at every annotation, prepare and convert (121
    exports, most of a tiny V1's QAT run here), for conv1d, conv2d and both transposed
    convolutions alike: ``_pattern_graph`` exports each once per process (the graph depends only
    on the pattern's code, closure and input shapes), and a pass for a convolution the graph
    does not hold is skipped (``_for_present_convs``). Put in place in every module imported so
    far that took torchao's functions (its QAT passes, the runtimes' quantizers: call this once
    the quantizer exists)."""
    import sys

    from torchao.quantization.pt2e import qat_utils, utils

    for module in list(sys.modules.values()):
        held = getattr(module, "_get_aten_graph_module_for_pattern", None)
        if held is utils._get_aten_graph_module_for_pattern and module is not utils:
            module._get_aten_graph_module_for_pattern = _pattern_graph
    for name in ("_fuse_conv_bn_qat_helper", "_fold_conv_bn_qat_helper"):
        helper = getattr(qat_utils, name)
        if not hasattr(helper, "__wrapped__"):
            setattr(qat_utils, name, _for_present_convs(helper))


def _for_present_convs(helper: Callable) -> Callable:
    """torchao's pass for one convolution function, run only where the graph holds that
    convolution (a pattern of an absent one matches nothing); run always for a function that
    is not an aten op's namesake."""

    @functools.wraps(helper)
    def run(
        graph: torch.fx.GraphModule, conv: Callable, *args: Any, **kwargs: Any
    ) -> torch.fx.GraphModule:
        op = getattr(torch.ops.aten, getattr(conv, "__name__", ""), None)
        ops = {getattr(node.target, "_overloadpacket", node.target) for node in graph.graph.nodes}
        if op is not None and op not in ops:
            return graph
        return helper(graph, conv, *args, **kwargs)

    return run


_PATTERN_GRAPHS: dict[Any, torch.fx.GraphModule] = {}


def _pattern_graph(
    pattern: Callable, example_inputs: tuple, is_cuda: bool = False, **kwargs: Any
) -> torch.fx.GraphModule:
    """torchao's exported pattern graph, a copy of the one exported first (callers rewrite it)."""
    from torchao.quantization.pt2e.utils import _get_aten_graph_module_for_pattern as export

    key = _pattern_key(pattern, example_inputs, is_cuda, kwargs)
    if key is None:
        return export(pattern, example_inputs, is_cuda, **kwargs)
    if key not in _PATTERN_GRAPHS:
        _PATTERN_GRAPHS[key] = export(pattern, example_inputs, is_cuda, **kwargs)
    return copy.deepcopy(_PATTERN_GRAPHS[key])


def _pattern_key(pattern: Callable, inputs: tuple, is_cuda: bool, kwargs: dict) -> Any:
    """What the exported pattern graph depends on, hashable; None where the pattern holds a
    value that is not (tensors stand for their shape and type: their values are not traced)."""

    def value(item: Any) -> Any:
        return (item.shape, item.dtype) if isinstance(item, Tensor) else item

    function = getattr(pattern, "fn", pattern)  # torchao's ``WrapperModule`` holds it
    if not hasattr(function, "__code__"):
        return None
    closure = tuple(cell.cell_contents for cell in function.__closure__ or ())  # tensors: by id
    named = tuple(sorted((name, value(item)) for name, item in kwargs.items()))
    key = (
        function.__code__,
        function.__defaults__,
        closure,
        is_cuda,
        tuple(map(value, inputs)),
        named,
    )
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _empty(observer: nn.Module) -> None:
    """An observer as before it observed anything (a histogram's has no reset of its own)."""
    from torchao.quantization.pt2e.observer import HistogramObserver

    if isinstance(observer, HistogramObserver):
        observer.histogram.zero_()
        observer.min_val.fill_(float("inf"))
        observer.max_val.fill_(float("-inf"))
    else:
        observer.reset_min_max_vals()


def _read_loaded_flags(net: QatNetwork, keys: Any) -> None:
    """After a checkpoint is loaded: the frozen flags it holds, applied at the next forward
    (the observers' own flags were loaded as they were saved, in whatever mode that was)."""
    net._frozen = (bool(net.observers_frozen), bool(net.bn_frozen))
    net._applied = None


def _set_training(graph: torch.fx.GraphModule, training: bool, bn_training: bool) -> None:
    """Dropout's and BatchNorm's ``training`` arguments in the exported graph. Not torchao's
    ``move_exported_model_to_train``: its BatchNorm pattern puts back eps 1e-5 whatever the
    network's (Keras's 1e-3)."""
    changed = False
    for node in graph.graph.nodes:
        index = TRAINING_ARGUMENT.get(node.target)
        if index is not None:
            wanted = bn_training if node.target is BATCH_NORM else training
            if node.args[index] != wanted:
                node.args = (*node.args[:index], wanted, *node.args[index + 1 :])
                changed = True
    if changed:
        graph.recompile()
