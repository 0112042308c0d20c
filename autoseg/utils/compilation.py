"""``torch.compile`` of the training forward passes: the ``compile`` setting made into a compiled module.

``train.compile`` (``--compile [MODE]``) is ``false`` (the default: eager, exactly the computation
without it), ``true`` (torch.compile's ``default`` mode) or one of :data:`COMPILE_MODES`. The
module is compiled whole: TorchDynamo captures its forward pass as one graph, AOTAutograd derives
the backward graph from it and Inductor generates the kernels of both (C++ on a CPU, Triton on a
GPU). ``reduce-overhead`` replays the compiled kernels as CUDA graphs, which needs fixed input
shapes (a training crop is); on a CPU it is the default mode.

The compiled module wraps the original one and shares its parameters and buffers; checkpoints
are written from the original module, so their keys are the same with or without compiling (an
``OptimizedModule`` would prefix every key with ``_orig_mod.``). The compiled kernels fuse and
reorder floating-point work, so results agree with the eager ones to rounding, not bit for bit
(``tests/test_compilation.py`` states the tolerance); random numbers drawn inside the graph (the
P-DARTS skip dropout, DARTS drop-path) come from Inductor's own generator, seeded from torch's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autoseg.utils.errors import UserError

COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""The modes of :func:`torch.compile` the ``compile`` setting may name."""


def compile_mode(setting: bool | str) -> str | None:
    """The :func:`torch.compile` mode of a ``compile`` setting, None when it is off."""
    if setting is False:
        return None
    if setting is True:
        return "default"
    if setting not in COMPILE_MODES:
        raise UserError(f"compile must be true, false or one of {', '.join(COMPILE_MODES)}, got {setting!r}")
    return setting


def check_compile(setting: bool | str, device: torch.device) -> None:
    """Raise a one-line UserError unless ``torch.compile`` can build kernels for ``device``: a
    supported Python, and a C++ compiler (CPU) or Triton (GPU)."""
    if compile_mode(setting) is None:
        return
    if not torch._dynamo.is_dynamo_supported():
        raise UserError("--compile: torch.compile does not run on this Python version; drop --compile "
                        "(train.compile: false)")
    if device.type == "cuda":
        from torch.utils._triton import has_triton
        if not has_triton():
            raise UserError("--compile on a GPU needs Triton (pip install triton); install it or drop --compile "
                            "(train.compile: false)")
        return
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler
    try:
        get_cpp_compiler()
    except InvalidCxxCompiler:
        raise UserError("--compile on a CPU needs a C++ compiler (g++, or the one the CXX environment variable "
                        "names); install one or drop --compile (train.compile: false)") from None


def compiled(module: nn.Module, setting: bool | str) -> nn.Module:
    """``module`` compiled as ``setting`` says (:func:`torch.compile`, sharing its parameters and
    buffers), or ``module`` itself when the setting is off."""
    mode = compile_mode(setting)
    return module if mode is None else torch.compile(module, mode=mode)


def bernoulli_mask(template: torch.Tensor, keep_prob: float) -> torch.Tensor:
    """``template`` filled with 1 at probability ``keep_prob``, else 0: ``template.bernoulli_`` when
    eager; under torch.compile ``rand < keep_prob``, so that a probability that changes during
    training (drop-path, skip dropout) is an input of the compiled graph and not a constant whose
    every change would compile the model again."""
    if torch.compiler.is_compiling():
        return (torch.rand_like(template) < keep_prob).to(template.dtype)
    return template.bernoulli_(keep_prob)


def varying_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout at rate ``p`` (``F.dropout``); under torch.compile through
    :func:`bernoulli_mask`, for the same reason."""
    if torch.compiler.is_compiling():
        return x * bernoulli_mask(torch.empty_like(x), 1.0 - p) / (1.0 - p)
    return F.dropout(x, p)
