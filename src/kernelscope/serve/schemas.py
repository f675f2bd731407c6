"""The explorer's JSON API as pydantic models: what each endpoint takes and returns.

FastAPI publishes these as ``/openapi.json``, so every view of the page can be
scripted. Limits are part of the schema (a 64x64 input, a 15x15 kernel, strides
up to 8, ...): a request outside them gets a 422 with a one-line message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "MAX_INPUT", "MAX_KERNEL", "MAX_OUTPUT", "MAX_STRIDE", "MAX_DILATION", "MAX_PAD", "MAX_ABS",
    "Matrix", "KernelMatrix", "OperationRequest", "OperationResponse", "ExplainResponse",
    "BackwardRequest", "BackwardResponse", "OutputPosition", "ChannelTerm", "Info", "BankKernel",
    "MatrixResponse", "RunInfo", "RunSummary", "FlatArray", "KernelsResponse", "AtlasKernel",
    "AtlasResponse", "FeatureMapsResponse", "PatchesResponse", "ProbeResponse", "ErrorResponse",
    "NetworkInfo", "ByteImage", "LayerMaps", "NetworkMapsResponse", "CellResponse",
    "UploadResponse", "ChannelPartResponse",
]

MAX_INPUT = 64  #: rows and columns of the input matrix (and of downscaled sample images)
MAX_KERNEL = 15  #: rows and columns of the kernel
MAX_OUTPUT = 128  #: rows and columns of the output (padding and dilation can grow it)
MAX_STRIDE = 8
MAX_DILATION = 4
MAX_PAD = 16  #: explicit padding amounts per side
MAX_ABS = 1e6  #: |value| of any number typed in: products and sums stay exact and finite

Number = int | float
Value = Annotated[float, Field(ge=-MAX_ABS, le=MAX_ABS, allow_inf_nan=False)]


def _rectangular(rows: list[list[float]]) -> list[list[float]]:
    width = len(rows[0])
    for r, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"row {r} has {len(row)} numbers but row 0 has {width}; "
                             "every row needs the same count")
    return rows


def _matrix(limit: int, what: str):
    row = Annotated[list[Value], Field(min_length=1, max_length=limit)]
    return Annotated[list[row], Field(min_length=1, max_length=limit,
                                      description=f"{what}: rows of numbers, at most {limit}x{limit}, "
                                                  f"|value| <= {MAX_ABS:g}"),
                     AfterValidator(_rectangular)]


Matrix = _matrix(MAX_INPUT, "input")
KernelMatrix = _matrix(MAX_KERNEL, "kernel")
Stride = Annotated[int, Field(ge=1, le=MAX_STRIDE)]
Dilation = Annotated[int, Field(ge=1, le=MAX_DILATION)]
Pad = Annotated[int, Field(ge=0, le=MAX_PAD)]
Index = Annotated[int, Field(ge=0, le=10_000)]


class ErrorResponse(BaseModel):
    """Every 4xx (and the 5xx that should never happen) answers with this."""

    detail: str = Field(description="One line: what was wrong and what is allowed.")


class OperationParams(BaseModel):
    """The settings of one cross-correlation or convolution, as for ``kernelscope.ops.correlate2d``."""

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: `true` is not the number 1

    input: Matrix
    kernel: KernelMatrix
    stride: Stride | Annotated[list[Stride], Field(min_length=2, max_length=2)] = 1
    padding: (Literal["valid", "same", "full"] | Pad
              | Annotated[list[Pad], Field(min_length=2, max_length=2)]
              | Annotated[list[Pad], Field(min_length=4, max_length=4)]) = "valid"
    padding_mode: Literal["zeros", "constant", "reflect", "replicate", "circular"] = "zeros"
    pad_value: Value = 0.0
    dilation: Dilation | Annotated[list[Dilation], Field(min_length=2, max_length=2)] = 1
    mode: Literal["correlate", "convolve"] = "correlate"


class OperationRequest(OperationParams):
    """An operation, and optionally the output cell to explain (``[row, col]``)."""

    bias: Value | None = None
    cell: Annotated[list[Index], Field(min_length=2, max_length=2)] | None = None


class BackwardRequest(OperationParams):
    """An operation and the gradient arriving at its output (default: all ones)."""

    grad_output: Matrix | None = None


class ChannelTerm(BaseModel):
    channel: int
    window: list[list[Number]]
    kernel: list[list[Number]]
    products: list[list[Number]]
    sum: Number


class OutputPosition(BaseModel):
    """How one output pixel comes about: ``explain``'s record of it."""

    batch: int
    out_channel: int
    row: int
    col: int
    input_rows: list[int] = Field(description="Rows of the original input; < 0 or >= H is padding.")
    input_cols: list[int]
    channels: list[ChannelTerm]
    bias: Number | None
    total: Number


class OperationResponse(BaseModel):
    mode: Literal["correlate", "convolve"]
    input_shape: list[int]
    kernel: list[list[Number]]
    applied_kernel: list[list[Number]] = Field(
        description="What slides over the input: the kernel, or flip(kernel) for convolution.")
    padding: list[int] = Field(description="(top, bottom, left, right)")
    padded_input: list[list[Number]]
    stride: list[int]
    dilation: list[int]
    output: list[list[Number]]
    output_shape: list[int]
    flip_identity: bool | None = Field(
        description="Convolution: convolve2d(I, K) == correlate2d(I, flip(K)) was checked.")
    position: OutputPosition | None = Field(
        default=None, description="The explained cell, when one was asked for.")
    position_agrees: bool | None = Field(
        default=None, description="The explained cell's total equals the engine's output there.")


class ExplainResponse(BaseModel):
    """``kernelscope.ops.explain(...).to_dict()`` for the whole (small) operation."""

    mode: str
    input: list[Any]
    kernel: list[Any]
    applied_kernel: list[Any]
    bias: list[Number] | None
    padded_input: list[Any]
    stride: list[int]
    padding: list[int]
    padding_mode: str
    pad_value: Number
    dilation: list[int]
    groups: int
    output: list[Any]
    positions: list[OutputPosition]
    engine_agrees: bool
    flip_identity: bool | None


class WeightedWindow(BaseModel):
    batch: int
    out_channel: int
    row: int
    col: int
    channel: int
    grad: Number
    input_rows: list[int]
    input_cols: list[int]
    window: list[list[Number]]
    contribution: list[list[Number]]


class BackwardResponse(BaseModel):
    """``kernelscope.ops.explain_backward(...)``: the gradients of kernel, bias and input."""

    mode: str
    input: list[Any]
    kernel: list[Any]
    applied_kernel: list[Any]
    stride: list[int]
    padding: list[int]
    padding_mode: str
    dilation: list[int]
    forward_output: list[Any]
    grad_output: list[Any]
    grad_output_given: bool
    weighted_windows: list[WeightedWindow]
    kernel_grad: list[Any] = Field(description="dL/dK: cross-correlation of the input with g.")
    bias_grad: list[Number]
    grad_output_dilated: list[Any]
    input_grad: list[Any] = Field(description="dL/dinput: g convolved with K ('full').")
    engine_agrees: bool


class BankKernel(BaseModel):
    name: str
    family: str
    description: str
    shape: list[int]
    resizable: bool


class Info(BaseModel):
    version: str
    limits: dict[str, float]
    padding_modes: list[str]
    sample_images: list[str]
    bank: list[BankKernel]
    backward: bool = Field(description="The backward view is available.")


class MatrixResponse(BaseModel):
    name: str
    shape: list[int]
    matrix: list[list[Number]]
    note: str = ""


class RunInfo(BaseModel):
    id: int
    name: str
    model: str
    dataset: str
    status: str
    epochs: list[int]
    conv_layers: list[str]


class RunSummary(RunInfo):
    feature_map_epochs: list[int]
    classes: list[str]
    metrics: list[dict[str, Number | None]]
    layer_shapes: dict[str, list[int]]


class FlatArray(BaseModel):
    """An array as its shape and its values in C order (easy to draw on a canvas)."""

    shape: list[int]
    data: list[float]
    vmin: float
    vmax: float


class KernelsResponse(BaseModel):
    run_id: int
    layer: str
    epoch: int
    kernels: FlatArray = Field(description="(O, C, kh, kw)")
    note: str = ""


class AtlasKernel(BaseModel):
    index: int
    kernel_class: str
    best_family: str
    best_name: str
    best_params: str
    best_score: float | None
    scores: dict[str, float | None]
    margin: float | None


class AtlasResponse(BaseModel):
    run_id: int
    layer: str
    epoch: int
    thresholds: dict[str, float | None] = Field(
        description="Per score: the control percentile a kernel must exceed for its class.")
    percentile: float
    fractions: dict[str, float]
    control_fractions: dict[str, dict[str, float]]
    kernels: list[AtlasKernel]
    notes: list[str]
    n_null: int
    seconds: float


class FeatureMapsResponse(BaseModel):
    run_id: int
    layer: str
    epoch: int
    probe: int
    label: int
    label_name: str
    image: FlatArray = Field(description="The probe image, raw, (C, H, W) in [0, 1]")
    maps: FlatArray = Field(description="(O, H', W')")


class PatchesResponse(BaseModel):
    run_id: int
    layer: str
    epoch: int
    k: int
    n_images: int
    split: str
    values: list[list[float]] = Field(description="(C, k) each channel's largest activations, descending")
    image_index: list[list[int]] = Field(description="(C, k) index in the run's test split")
    crops: FlatArray = Field(description="(C, k, C_in, rh, rw) receptive-field crops in [0, 1]; -1 outside the image")
    seconds: float


class ProbeResponse(BaseModel):
    run_id: int
    images: FlatArray = Field(description="(P, C, H, W) raw, in [0, 1]")
    labels: list[int]
    label_names: list[str]


# ---- the network view -------------------------------------------------------------------------

class NetworkInfo(BaseModel):
    """One network of the network view: a run (epochs: its checkpoints) or another SOURCE."""

    id: int
    label: str
    kind: str = Field(description="run, file, module or pretrained")
    epochs: list[int]
    conv_layers: list[str]
    input_shape: list[int] = Field(description="(C, H, W) the image is brought to")
    images: list[str] = Field(description="probe:I, sample:NAME; an uploaded image is upload:ID")
    note: str = ""


class ByteImage(BaseModel):
    """An array quantised to 0..255 (uint8, C order), base64: ``(value - lo) / (hi - lo) * 255``."""

    shape: list[int]
    data: str


class LayerMaps(BaseModel):
    layer: str
    shape: list[int] = Field(description="(C, H', W') the whole output map")
    channels: list[int] = Field(description="The channels shown (a sample for wide layers)")
    sample: str = Field(description="Which channels are shown, in words")
    read_at: str = Field(description="What 'after the activation' reads for this conv")
    vmin: float
    vmax: float
    scale: float = Field(description="data maps [-scale, scale] to 0..255 (diverging, symmetric about 0)")
    data: str = Field(description="(len(channels), H', W') uint8, base64")


class NetworkMapsResponse(BaseModel):
    network: int
    label: str
    epoch: int | None
    image: str
    image_note: str
    input: ByteImage = Field(description="The image at the model's input, (C, H, W) in [0, 1] as 0..255")
    layers: list[LayerMaps]
    seconds: float
    note: str


class CellResponse(BaseModel):
    """``kernelscope.analysis.cell.explain_cell(...).to_dict()`` for one cell of one conv layer."""

    network: int
    epoch: int | None
    image: str
    image_note: str
    layer: str
    channel: int
    row: int
    col: int
    input_shape: list[int]
    output_shape: list[int]
    kernel_size: list[int]
    stride: list[int]
    dilation: list[int]
    padding: list[int] = Field(description="(top, bottom, left, right)")
    padding_mode: str
    groups: int
    group: int
    input_rows: list[int] = Field(description="Rows of the conv's input; < 0 or >= H is padding")
    input_cols: list[int]
    padding_mask: list[list[bool]]
    channels: list[ChannelTerm] = Field(description="One per input channel of the output channel's group")
    bias: float | None
    total: float | None = Field(description="Sum of the channel sums plus the bias (float64)")
    network_total: float | None = Field(description="The network's own conv output at the cell")
    total_agrees: bool
    tolerance: float
    after: list[str]
    read_at: str
    post: float | None = Field(description="The value after the activation, from total")
    network_post: float | None = Field(description="The network's own output at the read point")
    post_agrees: bool
    post_note: str
    engine_agrees: bool
    notes: list[str]


class UploadResponse(BaseModel):
    image: str = Field(description="upload:ID, to name the image in other requests")
    width: int
    height: int


class ChannelPartResponse(BaseModel):
    """One analysis of one channel; ``status`` is ``computing`` until it is ready (ask again)."""

    network: int
    layer: str
    channel: int
    epoch: int | None
    part: Literal["atlas", "patches", "template", "visualization"]
    status: Literal["computing", "done", "error"]
    message: str = ""
    seconds: float | None = None
    result: dict[str, Any] | None = None
