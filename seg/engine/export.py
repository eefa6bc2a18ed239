"""Export a model to ONNX or to a ``torch.export`` program (``.pt2``), verified before use.

One ``torch.export`` trace serves both formats: the model, on the CPU in eval mode, is
traced through the PyTorch reference operators (``SEG_OPS_BACKEND=reference`` while it
runs, so no ``seg::*`` Triton op can reach the graph) with the batch, height and width
dynamic (``Dim.AUTO``). ``.pt2`` saves that program; ONNX translates it with
``torch.onnx.export(..., dynamo=True)``, the exporter PyTorch maintains (the TorchScript
one is deprecated and would retrace the model with its own, static, view of the sizes).

What keeps the graph valid at every size:

* the models pad every input to their stride and crop the logits back without a branch on
  the size (`seg.models.common.pad_to_multiple`, `crop_to`), so no size is frozen in;
* sizes 0 and 1 are traced size-obliviously (``backed_size_oblivious``), so a batch of one
  image runs the same graph as a batch of two;
* LiftPool's learned predictors mix channels with ``einsum``, whose decomposition guards on
  the batch being 1 or not; while tracing, that one call is written as the equivalent 1x1
  convolution (`_ExportRewrites`), which has no such branch. Eager results are untouched.

What is left, the exporter's guards, is checked here rather than trusted: ONNX files drop
them. `supported_minimum` finds the smallest height and width every guard allows (the
learned LiftPool predictors reflect-pad, which needs two samples at the deepest level: the
stride + 1 for them, 1 for the other models), and `check_guards` evaluates every guard over
a grid of sizes above it; a guard that fails anywhere (a size the graph silently mishandles)
is an `ExportError`. Then `verify` runs the written file (ONNX Runtime on the CPU, or the
loaded ``.pt2``) against the PyTorch model at three sizes.

The metadata (`export_metadata`: class names, palette, mean/std, ignore index, the minimum
size, the checkpoint's config) travels in the file: ONNX ``metadata_props["liftseg"]`` as
JSON; for ``.pt2`` a sidecar ``FILE.pt2.json`` and a copy inside the archive.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from seg.engine.checkpoint import write_text_atomic

FORMATS = ("onnx", "pt2")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2"}
METADATA_KEY = "liftseg"
METADATA_VERSION = 1
MIN_OPSET = 18  # torch.onnx's exporter has no translations below it (it would convert up)
# A verified file may differ from the PyTorch model by at most this fraction of the largest
# |logit|. float32 rounding, summed over a few dozen layers of convolutions computed in
# another order (ONNX Runtime's kernels, not PyTorch's), stays well below it: measured
# 2e-7..2e-6 for the test models, 2.6e-6 for SegNet x0.25 (13 convs) at 291x321 and 7.8e-6
# for DeepLabV3+ ResNet-50 at 257x265 (random weights: logits up to 600); a .pt2 program runs
# PyTorch's own kernels and matches exactly. An export that mishandles a size (a frozen
# padding branch, a wrong crop, lost detail bands) is off by a sizeable fraction of the
# logits (1e-1 and more). 1e-4 sits between the two, an order of magnitude from each.
TOLERANCE = 1e-4
IMAGE, LOGITS = "image", "logits"
DIM_NAMES = ("batch", "height", "width")


class ExportError(RuntimeError):
    """An export that could not be made or did not verify; the message says why and what to do."""


class SizeError(ValueError):
    """An image smaller than the smallest size an exported model supports."""


def require(module: str):
    """Import ``module`` of the ``export`` extra, or raise an ExportError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ExportError(
            f"{module} is not installed ({error}); ONNX export and inference need the "
            "'export' extra: pip install -e '.[export]' (make install does it)"
        ) from error


# ------------------------------------------------------------------------------ tracing


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """Run the block with ``SEG_OPS_BACKEND=reference`` (`seg.ops.dispatch` reads it per call)."""
    previous = os.environ.get("SEG_OPS_BACKEND")
    os.environ["SEG_OPS_BACKEND"] = "reference"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("SEG_OPS_BACKEND", None)
        else:
            os.environ["SEG_OPS_BACKEND"] = previous


class _ExportRewrites(TorchFunctionMode):
    """While tracing: LiftPool's channel mix ``einsum("oc,nc...->no...", w, h)`` as the 1x1
    convolution it is. einsum's decomposition branches on a size-1 batch (the exported
    program would refuse a single image); a convolution does not."""

    EQUATION = "oc,nc...->no..."

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.einsum and args and args[0] == self.EQUATION and len(args) == 3:
            weight, features = args[1], args[2]
            if features.dim() == 4:
                return F.conv2d(features, weight[:, :, None, None])
            if features.dim() == 3:
                return F.conv1d(features, weight[:, :, None])
        return func(*args, **kwargs)


def _size_oblivious() -> contextlib.AbstractContextManager:
    """Trace sizes 0/1 like any other size (no guard that the batch is not 1)."""
    try:
        from torch.fx.experimental import _config as fx_config

        return fx_config.patch(backed_size_oblivious=True)
    except (ImportError, AttributeError, KeyError):  # another torch: export guards instead
        return contextlib.nullcontext()


def network_stride(model: nn.Module) -> int:
    """The multiple a model pads its inputs to (SegNet: 2**depth; DeepLabV3+: output stride)."""
    for name in ("stride", "output_stride"):
        value = getattr(model, name, None)
        if isinstance(value, int) and value >= 1:
            return value
    return 1


def _user_input(program: torch.export.ExportedProgram):
    """The image placeholder of ``program`` (its parameters and buffers are inputs too)."""
    name = program.graph_signature.user_inputs[0]
    return next(node for node in program.graph.nodes if node.name == name)


def custom_ops(program: torch.export.ExportedProgram) -> list[str]:
    """Names of the ``seg::*`` custom ops in the graph (none when traced through the reference)."""
    found = set()
    for module in program.graph_module.modules():  # nested graphs too (autocast regions)
        graph = getattr(module, "graph", None)
        for node in graph.nodes if isinstance(graph, torch.fx.Graph) else ():
            if node.op == "call_function" and getattr(node.target, "namespace", None) == "seg":
                found.add(str(node.target))
    return sorted(found)


def export_program(model: nn.Module, example: Tensor) -> torch.export.ExportedProgram:
    """Trace ``model`` (eval mode, CPU) for ``example`` [N, C, H, W] with N, H and W dynamic.

    Raises:
        ExportError: the trace failed, a ``seg::`` custom op reached the graph, or a size
            was frozen into it (the model's size handling branches on it).
    """
    dims = {0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    try:
        with reference_ops(), _size_oblivious(), _ExportRewrites(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(model, (example,), dynamic_shapes=(dims,))
    except Exception as error:  # torch.export raises many types; all mean the same here
        raise ExportError(
            f"torch.export could not trace the model ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:600]}); rerun with SEG_DEBUG=1 for the traceback"
        ) from error
    ops = custom_ops(program)
    if ops:
        raise ExportError(
            f"the exported graph calls the custom ops {ops}, which ONNX Runtime and other "
            "machines lack: export with SEG_OPS_BACKEND=reference (a bug: export sets it)"
        )
    shape = _user_input(program).meta["val"].shape
    frozen = [DIM_NAMES[i] for i, d in zip((0, 1, 2), (0, 2, 3)) if isinstance(shape[d], int)]
    if frozen:
        raise ExportError(
            f"the export froze the {' and '.join(frozen)} of the example {tuple(example.shape)} "
            "into the graph (the model branches on it): the file would only work at that "
            "size. Make the model's size handling branch-free (see seg/models/common.py)"
        )
    return program


# ------------------------------------------------------------------------------ guards


class _Shape:
    """What a guard reads of an input: ``size()`` and contiguous ``stride()``."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(shape)

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def stride(self, dim: int | None = None):
        strides, step = [], 1
        for size in reversed(self.shape):
            strides.insert(0, step)
            step *= max(size, 1)
        return tuple(strides) if dim is None else strides[dim]

    def dim(self) -> int:
        return len(self.shape)


class _Inputs(dict):
    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.value = _Shape(shape)

    def __missing__(self, key):
        return self.value


def _guards(program: torch.export.ExportedProgram) -> list[tuple[str, Any]]:
    """``(text, code)`` of each guard the export recorded (empty where torch keeps none)."""
    compiled = []
    for text in getattr(program, "_guards_code", None) or []:
        try:
            compiled.append((text, compile(text, "<guard>", "eval")))
        except SyntaxError:
            continue
    return compiled


def _failed_guard(guards, shape: Sequence[int]) -> str | None:
    """The first guard that is False for an input of ``shape``, or None."""
    scope = {"torch": torch, "L": _Inputs(shape)}
    for text, code in guards:
        try:
            holds = bool(eval(code, scope))  # the guards torch.export wrote, nothing else
        except Exception:  # a guard on something else than the input's sizes
            continue
        if not holds:
            return text
    return None


def _size_dependent(guard: str, shape: Sequence[int]) -> ExportError:
    return ExportError(
        f"the exported graph is only valid for some sizes: its guard {guard!r} fails for an "
        f"input of {'x'.join(map(str, shape))}. The model branches on the input size "
        "(SegNet with pad_mode='none' does, at every odd-sized stage; ONNX would drop the "
        "guard and be silently wrong there): export a model that pads to its stride "
        "(pad_mode 'replicate' or 'zeros')"
    )


def supported_minimum(
    program: torch.export.ExportedProgram, example: Sequence[int], stride: int
) -> tuple[int, int]:
    """The smallest (height, width) from which on every guard holds (one dimension at a time,
    the other at the example's, for one image), trying sizes up to ``4 * stride + 2``.

    Raises:
        ExportError: a guard fails at the largest size tried (the graph depends on the size).
    """
    guards = _guards(program)
    _, channels, height, width = example
    limit = 4 * stride + 2
    minimum = []
    for axis in (2, 3):
        smallest = None
        for size in range(limit, 0, -1):
            shape = [1, channels, height, width]
            shape[axis] = size
            failed = _failed_guard(guards, shape)
            if failed is not None:
                if smallest is None:
                    raise _size_dependent(failed, shape)
                break
            smallest = size
        minimum.append(smallest)
    return minimum[0], minimum[1]


def check_guards(
    program: torch.export.ExportedProgram,
    channels: int,
    minimum: tuple[int, int],
    stride: int,
) -> int:
    """Evaluate every guard for batches 1-3 and every (height, width) from ``minimum`` to
    ``minimum + 2 * stride + 1``: the sizes in every residue modulo the stride. Returns how
    many guards were checked.

    Raises:
        ExportError: a guard fails at a size above the minimum: the graph is only valid
            for some sizes (ONNX drops the guard, so that file would be silently wrong).
    """
    guards = _guards(program)
    span = 2 * stride + 2
    for batch in (1, 2, 3):
        for height in range(minimum[0], minimum[0] + span):
            for width in range(minimum[1], minimum[1] + span):
                shape = (batch, channels, height, width)
                failed = _failed_guard(guards, shape)
                if failed is not None:
                    raise _size_dependent(failed, shape)
    return len(guards)


# ------------------------------------------------------------------------------ writing


def export_metadata(meta: dict, config: dict, source: str) -> dict:
    """What inference needs besides the graph, as JSON-ready values: a checkpoint's ``meta``
    (class names, palette, ignore index, mean/std) and ``config``; `export_model` adds the
    network's stride and the smallest input size the file supports."""
    return {
        "format": "liftseg-export",
        "version": METADATA_VERSION,
        "classes": list(meta["classes"]),
        "palette": [list(map(int, colour)) for colour in meta["palette"]],
        "ignore_index": int(meta.get("ignore_index", 255)),
        "mean": [float(v) for v in meta["mean"]],
        "std": [float(v) for v in meta["std"]],
        "input": {
            "name": IMAGE,
            "layout": "NCHW float32, RGB scaled to [0, 1], then (x - mean) / std",
        },
        "output": {"name": LOGITS, "layout": "NCHW float32 logits, the input's height/width"},
        "config": config,
        "source": source,
        "torch": torch.__version__,
    }


def _rename_dims(model, names: dict[str, str]) -> None:
    """Rename the export's size symbols (``s77``) in every shape of an onnx_ir model."""
    ir = require("onnx_ir")

    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    values = [*model.graph.inputs, *model.graph.outputs]
    for node in model.graph:
        values.extend(node.outputs)
    for value in values:
        if value.shape is None:
            continue
        dims = [
            ir.SymbolicDim(pattern.sub(lambda m: names[m.group(1)], dim.value))
            if isinstance(dim, ir.SymbolicDim) and dim.value
            else dim
            for dim in value.shape
        ]
        value.shape = ir.Shape(dims)


def write_onnx(
    program: torch.export.ExportedProgram,
    example: Tensor,
    path: Path,
    metadata: dict,
    opset: int | None = None,
) -> int:
    """Translate ``program`` to ONNX at ``path`` (inputs ``image``, outputs ``logits``, sizes
    named ``batch``/``height``/``width``); returns the opset written."""
    for module in ("onnx", "onnxscript", "onnx_ir"):
        require(module)
    log = io.StringIO()
    try:
        # The exporter prints its progress, onnx_ir logs notes: kept off the tool's output.
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            onnx_program = torch.onnx.export(
                program,
                (example,),
                dynamo=True,
                input_names=[IMAGE],
                output_names=[LOGITS],
                opset_version=opset,
                verbose=False,
            )
    except Exception as error:
        raise ExportError(
            f"torch.onnx.export could not translate the program ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:600]})"
        ) from error
    model = onnx_program.model
    shape = _user_input(program).meta["val"].shape
    symbols = {str(shape[d]): name for d, name in zip((0, 2, 3), DIM_NAMES)}
    _rename_dims(model, symbols)
    model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    onnx_program.save(str(path))
    return int(model.opset_imports.get("", 0))


def sidecar(path: Path) -> Path:
    """Where a ``.pt2`` file's metadata lives beside it: ``FILE.pt2.json``."""
    return path.with_name(path.name + ".json")


def write_pt2(program: torch.export.ExportedProgram, path: Path, metadata: dict) -> None:
    """Save ``program`` at ``path`` with ``metadata`` inside the archive (``liftseg.json``)."""
    torch.export.save(program, str(path), extra_files={"liftseg.json": json.dumps(metadata)})


# ------------------------------------------------------------------------------ loading


class ExportedModel:
    """An exported file as a model: ``model(images)`` maps normalised ``[N, 3, H, W]`` float
    images to ``[N, K, H, W]`` float32 logits on ``device``, like the PyTorch model.

    ONNX files run in ONNX Runtime (CUDA provider when ``device`` is cuda and it has one,
    the CPU provider otherwise); ``.pt2`` programs in PyTorch. ``meta`` is the file's
    metadata (`export_metadata`); images under ``min_size`` are refused.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        self.path = Path(path)
        self.device = torch.device(device)
        if not self.path.is_file():
            raise FileNotFoundError(f"exported model not found: {self.path}")
        suffix = self.path.suffix.lower()
        if suffix == ".onnx":
            self.format = "onnx"
            self._run, self.meta, self.providers = _load_onnx(self.path, self.device)
        elif suffix == ".pt2":
            self.format = "pt2"
            self._run, self.meta = _load_pt2(self.path, self.device)
            self.providers = [f"torch ({self.device.type})"]
        else:
            raise ValueError(f"{self.path}: an exported model ends in .onnx or .pt2")
        self.min_size = tuple(self.meta.get("input", {}).get("min_size", (1, 1)))

    def check_size(self, height: int, width: int) -> None:
        """Raise `SizeError` for an input smaller than the exported graph supports."""
        if height < self.min_size[0] or width < self.min_size[1]:
            raise SizeError(
                f"an input of {height}x{width} (the image, or the view eval.resize or TTA "
                f"made of it) is smaller than the {self.min_size[0]}x{self.min_size[1]} the "
                "exported model supports (learned LiftPool predictors need two samples at "
                "the deepest level): predict it with the checkpoint instead, or enlarge it"
            )

    def __call__(self, images: Tensor) -> Tensor:
        self.check_size(images.shape[-2], images.shape[-1])
        return self._run(images)


def _load_onnx(path: Path, device: torch.device):
    ort = require("onnxruntime")

    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as error:  # onnxruntime's own exception types
        raise ValueError(
            f"ONNX Runtime {ort.__version__} cannot load {path} ({' '.join(str(error).split())[:400]}); "
            "re-export it (a lower --opset if this runtime is older)"
        ) from error
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if text is None:
        raise ValueError(
            f"{path} has no '{METADATA_KEY}' metadata: it was not written by tools/export.py "
            "(which stores the class names, palette and normalisation there); re-export it"
        )
    input_name = session.get_inputs()[0].name

    def run(images: Tensor) -> Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = session.run([LOGITS], {input_name: array})
        return torch.from_numpy(logits).to(images.device)

    return run, json.loads(text), session.get_providers()


def _load_pt2(path: Path, device: torch.device):
    extra = {"liftseg.json": ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as error:
        raise ValueError(
            f"cannot load {path} as a torch.export program ({type(error).__name__}: {error}); "
            "it may be truncated or come from another torch version: re-export it"
        ) from error
    meta_path = sidecar(path)
    text = extra["liftseg.json"]  # the archive's own copy: it cannot belong to another file
    if meta_path.is_file():
        beside = meta_path.read_text()
        try:
            beside_meta = json.loads(beside)
        except ValueError as error:
            raise ValueError(f"{meta_path} is not valid JSON ({error}): delete it") from error
        if not text:
            text = beside
        elif beside_meta != json.loads(text):
            raise ValueError(
                f"{meta_path} disagrees with the metadata inside {path.name} (classes, palette, "
                "normalisation): it belongs to another export. Delete it (the archive's copy "
                "is used then) or re-export"
            )
    if not text:
        raise ValueError(
            f"{path} has no metadata ({meta_path.name} beside it, or inside it): it was not "
            "written by tools/export.py; re-export it"
        )
    module = program.module().to(device)

    @torch.no_grad()
    def run(images: Tensor) -> Tensor:
        return module(images.to(device, torch.float32))

    return run, json.loads(text)


# ------------------------------------------------------------------------------ verifying


@dataclass
class Check:
    """One verification: the exported file against the PyTorch model at one input size."""

    shape: tuple[int, int, int, int]
    max_abs_diff: float
    scale: float  # the largest |logit| of the PyTorch model
    agreement: float  # fraction of pixels whose argmax class agrees
    tolerance: float = TOLERANCE

    @property
    def relative(self) -> float:
        return self.max_abs_diff / self.scale if self.scale > 0 else self.max_abs_diff

    @property
    def ok(self) -> bool:
        return self.relative <= self.tolerance

    def line(self) -> str:
        size = "x".join(map(str, self.shape))
        return (
            f"  {size:<16} max |diff| {self.max_abs_diff:.2e}  (logits up to {self.scale:.3g}: "
            f"{self.relative:.1e} of it)  argmax agrees on {100 * self.agreement:.3f} % "
            f"{'ok' if self.ok else 'MISMATCH'}"
        )


def verification_shapes(
    example: Sequence[int], stride: int, minimum: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """Three input shapes: the smallest supported size off the stride, one near the example
    and off the stride, and one larger than the example (two images)."""
    _, channels, height, width = example

    def off(size: int, at_least: int) -> int:
        size = max(size, at_least)
        return size + 1 if stride > 1 and size % stride == 0 else size

    return [
        (1, channels, off(max(minimum[0], stride + 1), 1), off(max(minimum[1], stride + 3), 1)),
        (1, channels, off(height + 1, minimum[0]), off(width + stride // 2 + 1, minimum[1])),
        (2, channels, off(height + stride + 3, minimum[0]), off(width + 2 * stride + 1, 1)),
    ]


@torch.no_grad()
def verify(
    exported: Callable[[Tensor], Tensor],
    model: nn.Module,
    shapes: Sequence[tuple[int, int, int, int]],
    tolerance: float = TOLERANCE,
    seed: int = 0,
) -> list[Check]:
    """Compare ``exported(x)`` with ``model(x)`` (reference ops, CPU) on random images."""
    generator = torch.Generator().manual_seed(seed)
    checks = []
    for shape in shapes:
        images = torch.randn(shape, generator=generator)
        with reference_ops():
            expected = model(images).float()
        try:
            got = exported(images).float()
        except Exception as error:  # ONNX Runtime's or the program's own error types
            raise ExportError(
                f"the exported model fails on an input of {'x'.join(map(str, shape))} "
                f"({type(error).__name__}: {' '.join(str(error).split())[:400]})"
            ) from error
        if got.shape != expected.shape:
            raise ExportError(
                f"the exported model returned {tuple(got.shape)} for input {tuple(shape)}, "
                f"the PyTorch model {tuple(expected.shape)}"
            )
        agreement = (got.argmax(1) == expected.argmax(1)).float().mean().item()
        checks.append(
            Check(
                tuple(shape),
                (got - expected).abs().max().item(),
                expected.abs().max().item(),
                agreement,
                tolerance,
            )
        )
    return checks


# ------------------------------------------------------------------------------ the whole


@dataclass
class ExportReport:
    """What `export_model` did: the file, its format details and the verification."""

    path: Path
    format: str
    opset: int | None
    minimum: tuple[int, int]
    stride: int
    guards: int
    seconds: float
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def export_model(
    model: nn.Module,
    fmt: str,
    out: str | Path,
    metadata: dict,
    size: tuple[int, int],
    opset: int | None = None,
    in_channels: int = 3,
) -> ExportReport:
    """Export ``model`` (CPU, eval) to ``out`` in ``fmt``, then verify the file.

    The file is written beside ``out`` under a temporary name and moved into place only
    once it verified; a failed verification leaves nothing at ``out``. ``metadata`` is
    `export_metadata` without the sizes, which are filled in here.

    Raises:
        ExportError: the export failed, or the file differs from the model by more than
            `TOLERANCE` of the logits' scale at some size (the message lists each size).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    model = model.to("cpu").eval()
    stride = network_stride(model)
    example = torch.randn(2, in_channels, *size, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    program = export_program(model, example)
    minimum = supported_minimum(program, example.shape, stride)
    guards = check_guards(program, in_channels, minimum, stride)
    metadata = {**metadata, "stride": stride}
    metadata["input"] = {**metadata.get("input", {}), "min_size": list(minimum)}
    tmp = _temporary(out)
    opset_written = None
    try:
        if fmt == "onnx":
            opset_written = write_onnx(program, example, tmp, metadata, opset)
        else:
            write_pt2(program, tmp, metadata)
        seconds = time.perf_counter() - start
        exported = ExportedModel(tmp, "cpu")
        shapes = verification_shapes(example.shape, stride, minimum)
        checks = verify(exported, model, shapes, tolerance=TOLERANCE)
        report = ExportReport(out, fmt, opset_written, minimum, stride, guards, seconds, checks)
        if report.ok:
            os.replace(tmp, out)
            if fmt == "pt2":
                write_text_atomic(sidecar(out), json.dumps(metadata, indent=1) + "\n")
        return report
    finally:
        tmp.unlink(missing_ok=True)
