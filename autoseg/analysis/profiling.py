"""What a model costs: parameters, Multi-Adds, latency and memory, on any device.

Multi-Adds (multiply-accumulates, MACs) are counted with :class:`torch.utils.flop_counter.FlopCounterMode`
on the ``meta`` device: shapes only, no data and no real memory, so a 1024x2048 count takes
seconds. The counter knows the matrix ops (convolutions, linear layers, matrix products,
attention) and counts ``2 * MACs`` FLOPs for each; everything else (batch norm, activations,
pooling, bilinear resizing, additions, concatenation, biases) counts zero. That is the usual
"Multi-Adds" of the NAS literature; see the README for how it compares to the Auto-DeepLab paper.

:func:`kernel_ops` counts the ATen ops a step dispatches: on a GPU each launches at least one
kernel, so for small tensors their number, not their size, sets the time of a step.
"""
from __future__ import annotations

import collections
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

FUNCTIONAL = "(functional ops)"
"""Name under which Multi-Adds of ops called outside any submodule are reported."""


class _AllocatedStorages(TorchDispatchMode):
    """Weak references to the storages that ops allocate (not the ones they write into or view)
    while this mode is on."""

    def __init__(self) -> None:
        super().__init__()
        self.allocated: list[tuple[StorageWeakRef, int, int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        read = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in read:
                storage = tensor.untyped_storage()
                self.allocated.append((StorageWeakRef(storage), storage.data_ptr(), storage.nbytes()))
        return out

    def alive(self) -> dict[int, int]:
        """``{data pointer: bytes}`` of the allocated storages that still exist."""
        return {pointer: nbytes for ref, pointer, nbytes in self.allocated if not ref.expired()}


def saved_activation_bytes(forward: Callable[[], Any]) -> int:
    """Bytes of the distinct tensor storages that ``forward()`` leaves for the backward pass.

    These are the tensors autograd saves and what activation checkpointing keeps in their place
    (the inputs of a recomputed region, the outputs that selective checkpointing keeps): every
    storage that autograd saves, and every storage that ``forward()`` allocates and that is
    still held, by anything but its return value, when it returns. This is the activation memory
    a training step holds at its peak, whatever the device: on a GPU the peak allocation is this
    plus the weights, their gradients, the optimiser state and short-lived temporaries (and,
    with checkpointing, one region's recomputed activations). Storages shared by several
    tensors (views, or one output kept by two ops) count once.
    """
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    allocations = _AllocatedStorages()
    with warnings.catch_warnings():
        # torch 2.14 warns that selective checkpointing will route its kept outputs through these hooks
        # one day; they are counted either way
        warnings.filterwarnings("ignore", "A saved_tensors_hooks context", FutureWarning)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), allocations:
            result = forward()
    held = allocations.alive()
    for tensor in tree_leaves(result):
        if isinstance(tensor, torch.Tensor):
            held.pop(tensor.untyped_storage().data_ptr(), None)
    return sum({**storages, **held}.values())


NO_KERNEL_OPS = frozenset({"aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
                           "aten::new_empty_strided", "aten::lift_fresh", "aten::_unsafe_view"})
"""Ops that only allocate, pass a tensor through or reinterpret its shape (``_unsafe_view``: a view
whose schema does not say so), launching no kernel: not counted by :func:`kernel_ops`."""


class _OpCounter(TorchDispatchMode):
    """Counts the kernel-launching ATen ops dispatched while it is active (see :func:`kernel_ops`)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        schema = func._schema
        view = any(ret.alias_info is not None and not ret.alias_info.is_write for ret in schema.returns)
        if not (view or func.namespace == "profiler" or schema.name in NO_KERNEL_OPS):
            self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def kernel_ops(run: Callable[[], Any]) -> collections.Counter[str]:
    """The ATen ops that ``run()`` dispatches, counted by op (``aten.mul``, ...), views excluded.

    Counted with a :class:`~torch.utils._python_dispatch.TorchDispatchMode`: every op that reaches
    the dispatcher below autograd, in the forward pass, the backward pass (the autograd engine's
    ops) and an optimiser step, once per call, whatever it does inside (a ``_foreach_*`` op of
    many tensors is one op; a composite op like ``linear`` is counted as the ops it decomposes
    into). Not counted, because they launch no kernel: ops whose output is a view of an input
    (their schema marks a return as a non-writing alias: ``view``, ``expand``, ``transpose``,
    ``split``, ``detach``, ...), the allocation-only and metadata-only ops of :data:`NO_KERNEL_OPS`
    and the profiler's markers. In-place and ``out=`` ops (writing aliases) are counted. On a GPU each
    counted op launches one kernel or more, which for tiny tensors takes longer than the maths.
    """
    counter = _OpCounter()
    with counter:
        run()
    return counter.counts


def _on_meta(module: nn.Module) -> dict[str, torch.Tensor] | None:
    """Meta stand-ins for the parameters and buffers of ``module``, or None if they are all on meta."""
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    if all(t.is_meta for t in tensors.values()):
        return None
    return {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}


def module_madds(module: nn.Module, *inputs: torch.Tensor) -> dict[str, int]:
    """Multi-Adds of one inference of ``module(*inputs)``, by the submodule that runs them.

    Returns ``{qualified submodule name: MACs}`` for every submodule (``""`` is ``module``
    itself) whose own ops, not those of its children, count: ops a module calls itself rather
    than through a submodule (functional calls) are its own. The pass runs on the meta device
    in eval mode under ``torch.no_grad`` (inputs are moved to meta; a module with real weights
    is called with meta stand-ins, untouched), and the training flags are restored afterwards.
    """
    inputs = tuple(x.to("meta") for x in inputs)
    names = {id(m): name for name, m in module.named_modules(remove_duplicate=False)}
    own: dict[str, int] = {}
    frames: list[list[int]] = []  # per running module: [total FLOPs at entry, FLOPs of its called submodules]
    counter = FlopCounterMode(display=False)

    def enter(sub: nn.Module, _args: Any) -> None:
        frames.append([counter.get_total_flops(), 0])

    def leave(sub: nn.Module, _args: Any, _out: Any) -> None:
        entry, in_children = frames.pop()
        inclusive = counter.get_total_flops() - entry
        name = names[id(sub)]
        own[name] = own.get(name, 0) + inclusive - in_children
        if frames:
            frames[-1][1] += inclusive

    handles = [h for sub in module.modules() for h in (sub.register_forward_pre_hook(enter),
                                                       sub.register_forward_hook(leave))]
    training = {sub: sub.training for sub in module.modules()}
    module.eval()
    stand_ins = _on_meta(module)
    try:
        with counter, torch.no_grad():
            if stand_ins is None:
                module(*inputs)
            else:
                functional_call(module, stand_ins, inputs)
    finally:
        for handle in handles:
            handle.remove()
        for sub, flag in training.items():
            sub.training = flag
    return {name: flops // 2 for name, flops in own.items() if flops}


def count_madds(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Total Multi-Adds of one inference of ``module(*inputs)`` (see :func:`module_madds`)."""
    return sum(module_madds(module, *inputs).values())


def layer_kind(module: nn.Module) -> str:
    """A short description of the kind of layer ``module`` is, for the Multi-Adds breakdown."""
    if isinstance(module, nn.Conv2d):
        kernel = "x".join(str(k) for k in module.kernel_size)
        groups = module.groups
        kind = ("depthwise " if groups == module.in_channels and groups > 1 else
                f"grouped ({groups}) " if groups > 1 else "")
        dilated = ", dilated" if max(module.dilation) > 1 and max(module.kernel_size) > 1 else ""
        return f"{kernel} {kind}conv{dilated}"
    if isinstance(module, nn.Linear):
        return "linear"
    return type(module).__name__


@dataclass
class CostReport:
    """What one inference of a model costs.

    ``madds`` counts multiply-accumulates of convolutions and matrix products only (see the
    module docstring); ``latency_s`` (median seconds of one batch-1 inference) and
    ``peak_memory_bytes`` are measured on ``device`` and are None on ``meta``. ``memory`` says
    what was measured: ``cuda_max_allocated`` (the CUDA allocator's peak during the inference,
    weights and input included) or ``cpu_peak_rss_delta`` (the process's peak resident memory
    during the inference above what it held before it: what the inference had to get from the
    operating system; weights already loaded, and memory the allocator kept from earlier work
    and reuses, are not in it, so a small model can show 0). Memory is measured on the first
    inference, before the timed ones.
    """

    params: int
    madds: int
    input_size: tuple[int, ...]
    madds_by_layer: dict[str, int] = field(default_factory=dict)
    madds_by_module: dict[str, int] = field(default_factory=dict)
    device: str = "meta"
    latency_s: float | None = None
    peak_memory_bytes: int | None = None
    memory: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        return out

    def format(self) -> str:
        """A few human-readable lines: totals, then Multi-Adds by layer kind and by module."""
        size = "x".join(str(s) for s in self.input_size[-2:])
        lines = [f"{self.params:,} parameters ({self.params / 1e6:.2f} M), "
                 f"{self.madds / 1e9:.2f} G Multi-Adds at {size}"]
        if self.latency_s is not None:
            lines.append(f"latency on {self.device}, batch 1 (median): {1e3 * self.latency_s:.1f} ms")
        if self.peak_memory_bytes is not None:
            lines.append(f"peak memory of one inference ({self.memory}): {self.peak_memory_bytes / 2**20:,.1f} MB")
        for title, table in (("layer kind", self.madds_by_layer), ("module", self.madds_by_module)):
            width = max(len(title), *(len(name) for name in table)) if table else len(title)
            lines.append(f"{title:<{width}}  {'G Multi-Adds':>12}  {'share':>6}")
            for name, madds in table.items():
                lines.append(f"{name:<{width}}  {madds / 1e9:>12.3f}  {100 * madds / max(self.madds, 1):>5.1f}%")
        return "\n".join(lines)


def _breakdowns(model: nn.Module, own: dict[str, int], depth: int) -> tuple[dict[str, int], dict[str, int]]:
    """Multi-Adds by layer kind and by module name cut to ``depth`` components, largest first."""
    modules = dict(model.named_modules())
    by_layer: dict[str, int] = {}
    by_module: dict[str, int] = {}
    for name, madds in own.items():
        kind = FUNCTIONAL if name == "" else layer_kind(modules[name])
        by_layer[kind] = by_layer.get(kind, 0) + madds
        prefix = ".".join(name.split(".")[:depth]) if name else FUNCTIONAL
        by_module[prefix] = by_module.get(prefix, 0) + madds
    ordered = lambda table: dict(sorted(table.items(), key=lambda item: -item[1]))  # noqa: E731
    return ordered(by_layer), ordered(by_module)


def _rss_kib(field_name: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), or None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux ``clear_refs``); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_memory(run: Callable[[], Any], device: torch.device) -> tuple[int | None, str | None]:
    """Peak memory of one ``run()`` on ``device`` and what was measured (see :class:`CostReport`)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    before = _rss_kib("VmRSS")
    if before is None or not _reset_peak_rss():
        return None, None
    run()
    peak = _rss_kib("VmHWM")
    return (None, None) if peak is None else (max(peak - before, 0) * 1024, "cpu_peak_rss_delta")


def _latency(run: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``run()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def profile_model(model: nn.Module, input_size: Sequence[int], device: str | torch.device = "meta",
                  in_channels: int = 3, warmup: int = 3, repeats: int = 10, depth: int = 2) -> CostReport:
    """Parameters, Multi-Adds and (off the meta device) latency and peak memory of ``model``.

    Args:
        model: any module taking one ``(N, in_channels, H, W)`` tensor.
        input_size: ``(H, W)`` of the input.
        device: ``"meta"`` counts only (seconds, no real memory, any size); ``"cpu"`` or
            ``"cuda"`` also measure, on that device, the peak memory of one batch-1 inference
            (the first) and the median latency of one (``repeats`` timed after ``warmup``
            untimed), under ``torch.inference_mode``. The model is moved to that device.
        depth: the module breakdown groups submodules by this many leading name components
            (``backbone.stem``, ``head.aspp``, ...).

    Multi-Adds are counted on the meta device in eval mode whatever ``device`` is; the model's
    training flags are restored.
    """
    size = tuple(int(s) for s in input_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input_size must be (height, width) with positive sizes, got {tuple(input_size)}")
    x = torch.empty(1, in_channels, *size, device="meta")
    own = module_madds(model, x)
    by_layer, by_module = _breakdowns(model, own, depth)
    device = torch.device(device)
    report = CostReport(params=sum(p.numel() for p in model.parameters()), madds=sum(own.values()),
                        input_size=(1, in_channels, *size), madds_by_layer=by_layer, madds_by_module=by_module,
                        device=str(device))
    if device.type == "meta":
        return report
    training = model.training
    model.to(device).eval()
    inputs = torch.randn(1, in_channels, *size, device=device)

    def run() -> None:
        with torch.inference_mode():
            model(inputs)

    try:
        report.peak_memory_bytes, report.memory = _peak_memory(run, device)
        report.latency_s = _latency(run, device, warmup, repeats)
    finally:
        model.train(training)
    return report
