"""The explorer's web app: a FastAPI factory, the JSON API and the hand-written page.

``create_app(["runs/mnist"])`` returns an ASGI app; ``kernelscope serve`` runs it
with uvicorn. The page (``static/``: HTML, JS and CSS, no build step, no CDN) is fed
only by the JSON endpoints below, whose schema FastAPI publishes at
``/openapi.json``.

Errors: a :class:`~kernelscope.errors.KernelscopeError` becomes a 400 (404 for an
unknown run or name), a request outside the schema a 422, malformed JSON a 422,
and a body over ``MAX_BODY`` bytes a 413; each with ``{"detail": "one line"}``,
never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from kernelscope.errors import KernelscopeError, suggest
from kernelscope.serve import operation as ops_view
from kernelscope.serve import schemas as s
from kernelscope.serve.runs import RunStore, UnknownRun

__all__ = ["create_app", "MAX_BODY", "STATIC", "LOCAL_HOSTS"]

STATIC = Path(__file__).parent / "static"
MAX_BODY = 1 << 20  #: bytes in a request body (a 64x64 matrix of long floats is ~100 kB)

log = logging.getLogger("kernelscope.serve")

ERRORS = {400: {"model": s.ErrorResponse, "description": "Invalid values (one-line message)"},
          422: {"model": s.ErrorResponse, "description": "Outside the schema, or malformed JSON"}}
RUN_ERRORS = {**ERRORS, 404: {"model": s.ErrorResponse, "description": "No such run"}}

RunId = Annotated[int, PathParam(ge=0, le=1_000_000, description="Index of a run given on the command line")]
Epoch = Annotated[int | None, Query(ge=-1, le=1_000_000, description="Recorded epoch (default: last)")]
Layer = Annotated[str | None, Query(max_length=200, description="Conv layer (default: the first)")]
Image = Annotated[str, Query(min_length=3, max_length=120, pattern=r"^(probe|sample|upload):[A-Za-z0-9_.-]+$",
                             description="probe:I, sample:NAME or upload:ID")]
NetEpoch = Annotated[int | None, Query(ge=-1, le=1_000_000, description="Checkpoint epoch of a run "
                                                                       "(default: last; others: none)")]
NetLayer = Annotated[str, Query(min_length=1, max_length=200, description="Conv layer (dotted name)")]
Coord = Annotated[int, Query(ge=0, le=100_000)]


class NotFound(KernelscopeError):
    """An unknown name in the request path (404)."""


class _BodyLimit:
    """ASGI middleware: refuse request bodies larger than ``limit`` bytes with a 413."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _send_json(send, 413, f"request body too large: at most {self.limit} bytes")
        received = 0
        too_large = False

        async def limited_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    too_large = True
                    raise _TooLarge
            return message

        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, f"request body too large: at most {self.limit} bytes")


class _TooLarge(Exception):
    pass


async def _send_json(send, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        if item.get("type") == "json_invalid":
            ctx = item.get("ctx") or {}
            parts.append(f"malformed JSON: {ctx.get('error', 'cannot parse the body')}")
        else:
            parts.append(f"{loc}: {item.get('msg', 'invalid')}")
    more = len(error.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


@lru_cache(maxsize=8)
def _sample_gray(name: str):
    from kernelscope.data.images import load_image

    return load_image(f"sample:{name}", gray=True)  # (H, W) float64 in [0, 1]


#: Host headers accepted by default: a page on another site that resolves its name to 127.0.0.1
#: (DNS rebinding) sends its own name and is refused. "testserver" is the test clients' name.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]", "testserver")


def create_app(runs: Sequence[str | Path] = (), *, sources: Sequence[str | Path] = (), atlas_n_null: int = 300,
               allowed_hosts: Sequence[str] | None = LOCAL_HOSTS) -> FastAPI:
    """Build the explorer app serving the run directories ``runs`` (and the operation view).

    Parameters
    ----------
    runs : sequence of path
        Run directories; only these are ever read, addressed by their index.
    sources : sequence of str or path
        Other SOURCEs for the network view (model files, pretrained names such as ``onet``),
        opened with :func:`kernelscope.sources.open_source`; numbered after the runs.
    atlas_n_null : int
        Null kernels per control when the atlas of a run's layer is computed.
    allowed_hosts : sequence of str or None
        Host headers answered (others get a 400); None answers any host.

    Returns
    -------
    FastAPI

    Examples
    --------
    >>> from fastapi.testclient import TestClient
    >>> client = TestClient(create_app())
    >>> client.post("/api/operation", json={"input": [[1, 2], [3, 4]], "kernel": [[1, 0], [0, -1]]}).json()["output"]
    [[-3]]
    >>> client.get("/api/runs/0/kernels").json()["detail"]
    'run 0 is not served; this server has no run (start `kernelscope serve RUN`)'
    """
    from kernelscope import __version__
    from kernelscope.serve.network import NetworkStore

    store = RunStore(runs, atlas_n_null=atlas_n_null)
    networks = NetworkStore(store.runs, sources, atlas_n_null=atlas_n_null)
    # no /docs or /redoc: FastAPI's pages for them load scripts from a CDN; /openapi.json is the schema
    app = FastAPI(title="kernelscope explorer", version=__version__, docs_url=None, redoc_url=None,
                  description="The operation (cross-correlation, convolution, explained cell by cell) and the "
                              "runs given on the command line, as JSON.")
    app.state.store = store
    app.state.networks = networks

    # ---- errors ---------------------------------------------------------------------------
    @app.exception_handler(KernelscopeError)
    async def _library_error(request: Request, error: KernelscopeError):
        status = 404 if isinstance(error, (UnknownRun, NotFound)) else 400
        return JSONResponse({"detail": str(error).splitlines()[0] if str(error) else "invalid request"},
                            status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError):
        return JSONResponse({"detail": _validation_message(error)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException):
        return JSONResponse({"detail": str(error.detail)}, status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):  # pragma: no cover - a bug if reached
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error ({type(error).__name__}); see the server log"},
                            status_code=500)

    app.add_middleware(_BodyLimit, limit=MAX_BODY)
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    # ---- the page -------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ---- the operation --------------------------------------------------------------------
    @app.get("/api/info", response_model=s.Info, tags=["operation"])
    def info() -> dict[str, Any]:
        """Version, size limits, padding modes, sample images and the kernel bank."""
        from kernelscope.data.images import sample_image_names
        from kernelscope.kernels import kernel_info, kernel_names
        from kernelscope.ops import PADDING_MODES

        backward_ok = True  # kernelscope.ops.explain_backward is part of the engine
        bank = [kernel_info(n).to_dict() for n in kernel_names()]
        bank = [b for b in bank if max(b["shape"]) <= s.MAX_KERNEL or b["resizable"]]
        limits = {"input": s.MAX_INPUT, "kernel": s.MAX_KERNEL, "output": s.MAX_OUTPUT, "stride": s.MAX_STRIDE,
                  "dilation": s.MAX_DILATION, "pad": s.MAX_PAD, "abs_value": s.MAX_ABS}
        return {"version": __version__, "limits": limits, "padding_modes": list(PADDING_MODES),
                "sample_images": sample_image_names(), "bank": bank, "backward": backward_ok}

    @app.post("/api/operation", response_model=s.OperationResponse, responses=ERRORS, tags=["operation"])
    def operation(request: s.OperationRequest) -> dict[str, Any]:
        """The engine's output, the padded input, the applied (flipped) kernel, and one cell explained."""
        x, k = ops_view.as_numbers(request.input), ops_view.as_numbers(request.kernel)
        return ops_view.operation(x, k, bias=request.bias, stride=request.stride, padding=request.padding,
                                  padding_mode=request.padding_mode, pad_value=request.pad_value,
                                  dilation=request.dilation, mode=request.mode, cell=request.cell,
                                  max_output=s.MAX_OUTPUT)

    @app.post("/api/explain", response_model=s.ExplainResponse, responses=ERRORS, tags=["operation"])
    def explain(request: s.OperationRequest) -> dict[str, Any]:
        """``kernelscope.ops.explain(...).to_dict()``: every output cell traced (small operations only)."""
        x, k = ops_view.as_numbers(request.input), ops_view.as_numbers(request.kernel)
        return ops_view.explain_all(x, k, bias=request.bias, stride=request.stride, padding=request.padding,
                                    padding_mode=request.padding_mode, pad_value=request.pad_value,
                                    dilation=request.dilation, mode=request.mode)

    @app.post("/api/backward", response_model=s.BackwardResponse, responses=ERRORS, tags=["operation"])
    def backward(request: s.BackwardRequest) -> dict[str, Any]:
        """The backward pass: dL/dK (a correlation), dL/dbias, dL/dinput (a 'full' convolution)."""
        x, k = ops_view.as_numbers(request.input), ops_view.as_numbers(request.kernel)
        g = None if request.grad_output is None else ops_view.as_numbers(request.grad_output)
        return ops_view.backward(x, k, g, stride=request.stride, padding=request.padding,
                                 padding_mode=request.padding_mode, pad_value=request.pad_value,
                                 dilation=request.dilation, mode=request.mode)

    @app.get("/api/bank/{name}", response_model=s.MatrixResponse, responses={**ERRORS, 404: ERRORS[400]},
             tags=["operation"])
    def bank_kernel(name: Annotated[str, PathParam(max_length=100)],
                    size: Annotated[int | None, Query(ge=2, le=s.MAX_KERNEL)] = None) -> dict[str, Any]:
        """A kernel of the classical bank (``size`` for the resizable ones)."""
        from kernelscope.kernels import get_kernel, kernel_info, kernel_names

        if name not in kernel_names():
            raise NotFound(suggest(name, kernel_names(), what="kernel"))
        info = kernel_info(name)
        params = {}
        if size is not None:
            if not info.resizable:
                raise KernelscopeError(f"kernel {name!r} has a fixed size {tuple(info.shape)}; got size={size}")
            params["size"] = size
        elif max(info.shape) > s.MAX_KERNEL:
            params["size"] = s.MAX_KERNEL
        k = get_kernel(name, **params)
        return {"name": name, "shape": list(k.shape), "matrix": _round(k), "note": info.description}

    @app.get("/api/images/{name}", response_model=s.MatrixResponse, responses={**ERRORS, 404: ERRORS[400]},
             tags=["operation"])
    def sample_image(name: Annotated[str, PathParam(max_length=100)],
                     size: Annotated[int, Query(ge=2, le=s.MAX_INPUT)] = 24) -> dict[str, Any]:
        """A bundled sample image in grey, downscaled so its longer side is ``size``, as integers 0..255."""
        import numpy as np
        from skimage.transform import resize

        from kernelscope.data.images import sample_image_names

        if name not in sample_image_names():
            raise NotFound(suggest(name, sample_image_names(), what="sample image"))
        image = _sample_gray(name)  # (H, W)
        h, w = image.shape
        scale = size / max(h, w)
        shape = (max(1, round(h * scale)), max(1, round(w * scale)))
        small = resize(image, shape, anti_aliasing=True, preserve_range=True)  # (h', w')
        matrix = np.clip(np.round(small * 255), 0, 255).astype(np.int64)
        return {"name": name, "shape": list(matrix.shape), "matrix": matrix.tolist(),
                "note": f"sample:{name}, {h}x{w} downscaled to {shape[0]}x{shape[1]}, grey 0..255"}

    # ---- runs -----------------------------------------------------------------------------
    @app.get("/api/runs", response_model=list[s.RunInfo], tags=["runs"])
    def list_runs() -> list[dict[str, Any]]:
        """The runs given on the command line, by index."""
        return [store.info(i) for i in range(len(store))]

    @app.get("/api/runs/{run_id}", response_model=s.RunSummary, responses=RUN_ERRORS, tags=["runs"])
    def run_summary(run_id: RunId) -> dict[str, Any]:
        """Manifest summary, recorded epochs, layer shapes and the training curves."""
        return store.summary(run_id)

    @app.get("/api/runs/{run_id}/kernels", response_model=s.KernelsResponse, responses=RUN_ERRORS, tags=["runs"])
    def run_kernels(run_id: RunId, layer: Layer = None, epoch: Epoch = None) -> dict[str, Any]:
        """One layer's kernels at one recorded epoch, ``(O, C, kh, kw)``."""
        return store.kernels(run_id, layer=layer, epoch=epoch)

    @app.get("/api/runs/{run_id}/atlas", response_model=s.AtlasResponse, responses=RUN_ERRORS, tags=["runs"])
    def run_atlas(run_id: RunId, layer: Layer = None, epoch: Epoch = None) -> dict[str, Any]:
        """Per kernel: atlas class, best classical match and scores against the controls (cached)."""
        return store.atlas(run_id, layer=layer, epoch=epoch)

    @app.get("/api/runs/{run_id}/featuremaps", response_model=s.FeatureMapsResponse, responses=RUN_ERRORS,
             tags=["runs"])
    def run_feature_maps(run_id: RunId, layer: Layer = None, epoch: Epoch = None,
                         probe: Annotated[int, Query(ge=0, le=100_000)] = 0) -> dict[str, Any]:
        """One probe image's feature maps at one layer and epoch, ``(O, H', W')``."""
        return store.feature_maps(run_id, layer=layer, epoch=epoch, probe=probe)

    @app.get("/api/runs/{run_id}/patches", response_model=s.PatchesResponse, responses=RUN_ERRORS, tags=["runs"])
    def run_patches(run_id: RunId, layer: Layer = None, epoch: Epoch = None,
                    k: Annotated[int, Query(ge=1, le=16)] = 6) -> dict[str, Any]:
        """Each channel's k most activating test images, cropped by the receptive field (needs checkpoints; cached)."""
        return store.patches(run_id, layer=layer, epoch=epoch, k=k)

    @app.get("/api/runs/{run_id}/probe", response_model=s.ProbeResponse, responses=RUN_ERRORS, tags=["runs"])
    def run_probe(run_id: RunId) -> dict[str, Any]:
        """The probe images (raw, in [0, 1]) and their labels."""
        return store.probe(run_id)

    # ---- the network view -----------------------------------------------------------------
    @app.get("/api/network", response_model=list[s.NetworkInfo], tags=["network"])
    def list_networks() -> list[dict[str, Any]]:
        """The networks of the network view: the runs (same indices), then the other SOURCEs."""
        return [networks.info(i) for i in range(len(networks))]

    @app.get("/api/network/{net_id}/maps", response_model=s.NetworkMapsResponse, responses=RUN_ERRORS,
             tags=["network"])
    def network_maps(net_id: RunId, image: Image, epoch: NetEpoch = None,
                     max_channels: Annotated[int, Query(ge=1, le=64)] = 8) -> dict[str, Any]:
        """Every conv layer's feature maps (the conv's own output) for one image; a channel sample of wide layers."""
        return networks.maps(net_id, image=image, epoch=epoch, max_channels=max_channels)

    @app.get("/api/network/{net_id}/cell", response_model=s.CellResponse, responses=RUN_ERRORS, tags=["network"])
    def network_cell(net_id: RunId, image: Image, layer: NetLayer, channel: Coord, row: Coord, col: Coord,
                     epoch: NetEpoch = None) -> dict[str, Any]:
        """One cell explained: windows, kernel slices, products, sums, bias, total, value after the activation."""
        return networks.cell(net_id, image=image, layer=layer, channel=channel, row=row, col=col, epoch=epoch)

    @app.get("/api/network/{net_id}/channel", response_model=s.ChannelPartResponse, responses=RUN_ERRORS,
             tags=["network"])
    def network_channel(net_id: RunId, layer: NetLayer, channel: Coord,
                        part: Annotated[str, Query(pattern="^(atlas|patches|template|visualization)$")],
                        epoch: NetEpoch = None) -> dict[str, Any]:
        """One analysis of one channel (computed in the background once, cached; ``computing`` until ready)."""
        return networks.channel(net_id, layer=layer, channel=channel, part=part, epoch=epoch)

    @app.post("/api/network/upload", response_model=s.UploadResponse, responses=ERRORS, tags=["network"])
    async def network_upload(request: Request) -> dict[str, Any]:
        """An image file as the request body (at most MAX_BODY bytes and 2048x2048 pixels); answers its name."""
        return networks.add_upload(await request.body())

    return app


def _round(k) -> list[list[float]]:
    import numpy as np

    k = np.asarray(k, dtype=np.float64)
    if np.all(k == np.round(k)):
        return k.astype(np.int64).tolist()
    return np.round(k, 4).tolist()
