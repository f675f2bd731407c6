"""The explorer's JSON API: numbers equal the engine's, hostile requests get one-line 4xx answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from kernelscope.ops import convolve2d, correlate2d, explain
from kernelscope.ops.explain_backward import explain_backward

README_X = [[9, 8, 7, 6], [5, 4, 3, 2], [1, 2, 3, 4], [5, 6, 7, 8]]
README_K = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def post(client, url, body):
    response = client.post(url, json=body)
    return response.status_code, response.json()


# ---- the operation ------------------------------------------------------------------------

def test_readme_example_matches_the_engine(client):
    status, body = post(client, "/api/operation", {"input": README_X, "kernel": README_K, "cell": [0, 0]})
    assert status == 200
    assert body["output"] == [[154, 157], [200, 233]]
    assert body["output"] == correlate2d(np.array(README_X), np.array(README_K)).tolist()
    pos = body["position"]
    assert pos["total"] == 154 and pos["channels"][0]["sum"] == 154
    assert pos["channels"][0]["products"] == [[9, 16, 21], [20, 20, 18], [7, 16, 27]]
    assert body["position_agrees"] is True
    assert body["flip_identity"] is None  # correlation: nothing to check


CASES = [
    dict(),
    dict(padding="same", padding_mode="reflect"),
    dict(padding=[1, 2, 0, 1], padding_mode="constant", pad_value=-1.5),
    dict(padding="full", padding_mode="circular", stride=[2, 1]),
    dict(padding=2, padding_mode="replicate", dilation=2, mode="convolve", bias=3),
    dict(stride=2, dilation=[1, 2], padding=[1, 3], mode="convolve"),
]


@pytest.mark.parametrize("options", CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain")
def test_every_cell_equals_the_full_explain_trace(client, rng, options):
    """The one-window trace behind a click equals explain()'s record of that cell, for every cell."""
    x = rng.integers(-9, 10, (6, 7))
    k = rng.integers(-3, 4, (3, 2))
    body = {"input": x.tolist(), "kernel": k.tolist(), **options}
    full = explain(x, k, None if "bias" not in options else np.array([options["bias"]]),
                   **{key: tuple(v) if isinstance(v, list) else v for key, v in options.items() if key != "bias"})
    reference = json.loads(json.dumps(full.to_dict()))
    status, plain = post(client, "/api/operation", body)
    assert status == 200
    assert plain["output"] == reference["output"]
    assert plain["applied_kernel"] == reference["applied_kernel"]
    assert plain["padded_input"] == reference["padded_input"][0][0]
    h_out, w_out = plain["output_shape"]
    for position in reference["positions"]:
        status, got = post(client, "/api/operation", {**body, "cell": [position["row"], position["col"]]})
        assert status == 200
        assert got["position"] == position
        assert got["position_agrees"] is True
    assert len(reference["positions"]) == h_out * w_out


def test_convolution_shows_the_flipped_kernel_and_checks_the_identity(client):
    status, body = post(client, "/api/operation", {"input": README_X, "kernel": README_K, "mode": "convolve"})
    assert status == 200
    assert body["applied_kernel"] == [[9, 8, 7], [6, 5, 4], [3, 2, 1]]
    assert body["kernel"] == README_K
    assert body["output"] == convolve2d(np.array(README_X), np.array(README_K)).tolist()
    assert body["flip_identity"] is True


def test_floats_stay_floats_and_integers_stay_exact(client):
    status, body = post(client, "/api/operation", {"input": [[0.5, 1], [2, 3]], "kernel": [[2]]})
    assert status == 200 and body["output"] == [[1.0, 2.0], [4.0, 6.0]]
    big = [[999_999] * 3] * 3
    status, body = post(client, "/api/operation", {"input": big, "kernel": big})
    assert status == 200 and body["output"] == [[9 * 999_999 ** 2]]  # exact: 8999982000009


def test_largest_input_is_accepted_and_answers_quickly(client, rng):
    x = rng.random((64, 64)).round(3).tolist()
    k = rng.random((15, 15)).round(3).tolist()
    status, body = post(client, "/api/operation", {"input": x, "kernel": k, "padding": "same", "cell": [63, 0]})
    assert status == 200
    assert body["output_shape"] == [64, 64]
    assert np.allclose(body["output"], correlate2d(np.array(x), np.array(k), padding="same"))
    assert body["position"]["input_rows"][0] == 63 - 7 and body["position_agrees"] is True


@pytest.mark.parametrize("body, status, message", [
    ({"input": [[1] * 65], "kernel": [[1]]}, 422, r"^input\.0: List should have at most 64 items"),
    ({"input": [[1]] * 65, "kernel": [[1]]}, 422, r"^input: List should have at most 64 items"),
    ({"input": [[1]], "kernel": [[1] * 16]}, 422, r"^kernel\.0: List should have at most 15 items"),
    ({"input": [[1, 2], [3]], "kernel": [[1]]}, 422, r"row 1 has 1 numbers but row 0 has 2"),
    ({"input": [], "kernel": [[1]]}, 422, r"^input: List should have at least 1 item"),
    ({"input": [[1e7]], "kernel": [[1]]}, 422, r"^input\.0\.0: Input should be less than or equal to 1000000"),
    ({"input": [["a"]], "kernel": [[1]]}, 422, r"^input\.0\.0: Input should be a valid number"),
    ({"input": [[1]]}, 422, r"^kernel: Field required"),
    ({"input": [[1]], "kernel": [[1]], "evil": 1}, 422, r"^evil: Extra inputs are not permitted"),
    ({"input": [[1]], "kernel": [[1]], "stride": 9}, 422, r"stride"),
    ({"input": [[1]], "kernel": [[1]], "padding": "bogus"}, 422, r"padding"),
    ({"input": [[1]], "kernel": [[1]], "padding_mode": "wrap"}, 422, r"padding_mode"),
    ({"input": [[1]], "kernel": [[1, 2]]}, 400, r"kernel 1x2 is larger than the padded input 1x1"),
    ({"input": [[1, 2], [3, 4]], "kernel": [[1]], "cell": [2, 0]}, 400,
     r"^cell must be \[row, col\] inside the 2x2 output; got \[2, 0\]$"),
    ({"input": [[1, 2], [3, 4]], "kernel": [[1]], "padding": 3, "padding_mode": "reflect"}, 400, r"reflect"),
])
def test_bad_requests_get_a_one_line_4xx(client, body, status, message):
    response = client.post("/api/operation", json=body)
    assert response.status_code == status, response.text[:300]
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    assert re.search(message, detail), detail


def test_output_cap():
    """Defensive: the schema's limits keep outputs within 96x96, below the cap, so the cap is tested directly."""
    from kernelscope.serve.operation import operation

    with pytest.raises(Exception, match=r"the output would be 30x30; at most 20x20 is shown"):
        operation(np.ones((16, 16), int), np.ones((3, 3), int), padding=8, max_output=20)


@pytest.mark.parametrize("text, message", [
    ("{bad json", r"^malformed JSON: "),
    ('{"input": [[NaN]], "kernel": [[1]]}', r"^input\.0\.0: Input should be a finite number"),
    ('{"input": [[Infinity]], "kernel": [[1]]}', r"finite number|less than or equal"),
    ("[1, 2]", r"^body: Input should be a valid dictionary"),
    ("", r"malformed JSON|Field required"),
])
def test_malformed_json_gets_a_422_with_a_message(client, text, message):
    response = client.post("/api/operation", content=text, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert re.search(message, response.json()["detail"]), response.json()


def test_huge_bodies_are_refused(client):
    response = client.post("/api/operation", content=b"[" + b"1," * 700_000 + b"1]",
                           headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"] == "request body too large: at most 1048576 bytes"


def test_explain_endpoint_is_explain_to_dict(client):
    status, body = post(client, "/api/explain", {"input": README_X, "kernel": README_K, "mode": "convolve",
                                                 "padding": 1, "bias": 2})
    assert status == 200
    reference = explain(np.array(README_X), np.array(README_K), np.array([2]), padding=1, mode="convolve")
    assert body == json.loads(json.dumps(reference.to_dict()))
    status, body = post(client, "/api/explain", {"input": [[1] * 64] * 64, "kernel": [[1]]})
    assert status == 400 and body["detail"].startswith("explain is for small inputs: this call has 4096")


def test_backward_endpoint_is_explain_backward(client):
    x, k = [[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[1, 0], [0, -1]]
    status, body = post(client, "/api/backward", {"input": x, "kernel": k, "stride": 1, "padding": 1,
                                                  "grad_output": [[1, 2, 0, 1]] * 4})
    assert status == 200
    ref = explain_backward(np.array(x), np.array(k), np.array([[1, 2, 0, 1]] * 4), padding=1)
    assert body["kernel_grad"] == ref.kernel_grad and body["input_grad"] == ref.input_grad
    assert body["bias_grad"] == ref.bias_grad and body["engine_agrees"] is True
    status, body = post(client, "/api/backward", {"input": x, "kernel": k, "grad_output": [[1]]})
    assert status == 400 and "grad_out has shape (1, 1)" in body["detail"]


# ---- bank kernels and sample images ---------------------------------------------------------

def test_bank_kernels(client):
    from kernelscope.kernels import get_kernel

    body = client.get("/api/bank/sobel_x").json()
    assert body["matrix"] == get_kernel("sobel_x").astype(int).tolist()
    body = client.get("/api/bank/gaussian?size=5").json()
    assert np.allclose(body["matrix"], get_kernel("gaussian", size=5), atol=5e-5)
    assert client.get("/api/bank/gabor").json()["shape"] == [15, 15]
    response = client.get("/api/bank/sobelx")
    assert response.status_code == 404 and "did you mean 'sobel_x'" in response.json()["detail"]
    response = client.get("/api/bank/scharr_x?size=5")
    assert response.status_code == 400
    assert response.json()["detail"] == "kernel 'scharr_x' has a fixed size (3, 3); got size=5"
    assert client.get("/api/bank/gaussian?size=16").status_code == 422


def test_sample_images_are_downscaled_and_capped(client):
    from skimage.transform import resize

    from kernelscope.data.images import load_image

    body = client.get("/api/images/camera?size=16").json()
    assert body["shape"] == [16, 16]
    expected = np.round(resize(load_image("sample:camera", gray=True), (16, 16), anti_aliasing=True) * 255)
    assert np.array_equal(body["matrix"], expected)
    assert client.get("/api/images/camera?size=65").status_code == 422
    response = client.get("/api/images/camra")
    assert response.status_code == 404 and "did you mean 'camera'" in response.json()["detail"]


def test_info_lists_limits_samples_and_bank(client):
    info = client.get("/api/info").json()
    assert info["limits"]["input"] == 64 and info["limits"]["kernel"] == 15
    assert "camera" in info["sample_images"] and any(b["name"] == "sobel_x" for b in info["bank"])
    assert info["backward"] is True


# ---- runs ---------------------------------------------------------------------------------------

def test_only_the_given_runs_are_listed(client, serve_run):
    runs = client.get("/api/runs").json()
    assert len(runs) == 1
    assert runs[0]["id"] == 0 and runs[0]["name"] == Path(serve_run).name
    assert runs[0]["epochs"] == [0, 1, 2, 3] and runs[0]["conv_layers"] == ["conv1", "conv2"]


def test_run_summary_and_arrays_equal_the_run_directory(client, serve_run):
    from kernelscope.train.rundir import load_run

    run = load_run(serve_run)
    summary = client.get("/api/runs/0").json()
    assert summary["metrics"] == run.metrics
    assert summary["layer_shapes"] == {"conv1": [6, 1, 5, 5], "conv2": [4, 6, 3, 3]}
    for epoch in (0, 3):
        body = client.get(f"/api/runs/0/kernels?layer=conv1&epoch={epoch}").json()
        k = run.kernels(epoch, "conv1")
        assert body["kernels"]["shape"] == list(k.shape)
        assert np.allclose(np.reshape(body["kernels"]["data"], k.shape), k, atol=1e-5)
    first = client.get("/api/runs/0/kernels?epoch=0").json()["kernels"]["data"]
    last = client.get("/api/runs/0/kernels").json()
    assert last["epoch"] == 3 and last["layer"] == "conv1" and last["kernels"]["data"] != first
    maps = client.get("/api/runs/0/featuremaps?layer=conv2&epoch=2&probe=3").json()
    assert maps["maps"]["shape"] == [4, 6, 6] and maps["label"] == 1
    assert np.allclose(np.reshape(maps["maps"]["data"], (4, 6, 6)), run.feature_maps(2)["conv2"][3], atol=1e-4)
    probe = client.get("/api/runs/0/probe").json()
    assert probe["images"]["shape"] == [4, 1, 12, 12] and probe["labels"] == [0, 1, 0, 1]
    assert probe["label_names"][1] == "<img src=x onerror=window.__owned=true>"


@pytest.mark.parametrize("url, status, message", [
    ("/api/runs/1", 404, r"^run 1 is not served; this server has runs 0\.\.0$"),
    ("/api/runs/1/kernels", 404, r"not served"),
    ("/api/runs/-1", 422, r"run_id"),
    ("/api/runs/abc/kernels", 422, r"run_id"),
    ("/api/runs/0/kernels?epoch=9", 400, r"^epoch 9 is not recorded in run 0 \(kernel epochs: 0, 1, 2, 3\)$"),
    ("/api/runs/0/kernels?layer=conv", 400, r"^unknown conv layer 'conv'; did you mean"),
    ("/api/runs/0/featuremaps?probe=4", 400, r"^probe must be 0\.\.3"),
    ("/api/runs/0/atlas?layer=%3Cscript%3E", 400, r"unknown conv layer '<script>'"),
    ("/api/runs/..%2F..%2Fetc/kernels", 404, r"^Not Found$"),
    ("/static/..%2F..%2F..%2Fpyproject.toml", 404, r"Not Found"),
    ("/api/runs/0/kernels?layer=" + "x" * 201, 422, r"layer"),
])
def test_run_requests_name_runs_by_index_only(client, url, status, message):
    response = client.get(url)
    assert response.status_code == status, response.text
    assert re.search(message, response.json()["detail"]), response.json()


def test_atlas_per_kernel_and_cached(client, serve_run):
    from kernelscope.analysis.atlas import atlas_of

    first = client.get("/api/runs/0/atlas?layer=conv1&epoch=3").json()
    reference = atlas_of(serve_run, layer="conv1", epoch=3, with_evolution=False, n_null=60)
    assert [k["kernel_class"] for k in first["kernels"]] == [r["class"] for r in reference.records]
    assert [k["best_name"] for k in first["kernels"]] == [r["best_match"]["name"] for r in reference.records]
    assert first["fractions"] == reference.fractions
    # the edge kernels the run moves to are classified as edges; its random initial kernels are not
    assert first["fractions"]["edge-like"] == 1.0
    init = client.get("/api/runs/0/atlas?layer=conv1&epoch=0").json()
    assert init["fractions"]["edge-like"] < 0.5
    again = client.get("/api/runs/0/atlas?layer=conv1&epoch=3").json()
    assert again == first  # the same cached answer (its `seconds` would differ if recomputed)


# ---- the page -----------------------------------------------------------------------------------

def test_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Content-Security-Policy" in page.text and "default-src 'self'" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    for name in ("index.html", "app.js"):
        text = (Path(__file__).parents[2] / "src/kernelscope/serve/static" / name).read_text()
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function",
                             text), name
        assert not re.search(r"https?://(?!127\.0\.0\.1)", text), f"{name} must not load anything remote"


def test_openapi_schema_lists_every_endpoint(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/operation", "/api/explain", "/api/backward", "/api/info", "/api/bank/{name}",
            "/api/images/{name}", "/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/kernels",
            "/api/runs/{run_id}/atlas", "/api/runs/{run_id}/featuremaps",
            "/api/runs/{run_id}/probe"} <= set(schema["paths"])
    error = schema["paths"]["/api/operation"]["post"]["responses"]["422"]
    assert error["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")


def test_a_bad_run_directory_is_refused_at_start(tmp_path):
    from kernelscope.errors import KernelscopeError
    from kernelscope.serve import create_app

    with pytest.raises(KernelscopeError, match="is not a run directory"):
        create_app([tmp_path])


def test_top_patches_are_each_channels_largest_activations(trained_run):
    """The served top values equal each channel's largest spatial maxima over the test split, by torch directly."""
    import torch
    from fastapi.testclient import TestClient

    from kernelscope.serve import create_app
    from kernelscope.train.rundir import load_run

    with TestClient(create_app([trained_run])) as client:
        body = client.get("/api/runs/0/patches?layer=features.0&epoch=1&k=3").json()
        assert client.get("/api/runs/0/patches?layer=features.0&epoch=1&k=3").json() == body  # cached
    run = load_run(trained_run)
    data = run.dataset()
    with torch.no_grad():
        acts = run.model(1).features[0](torch.from_numpy(data.normalise(data.x_test)))  # (N, C, 8, 8)
    maxima = acts.flatten(2).max(dim=2).values.numpy()  # (N, C)
    expected = -np.sort(-maxima, axis=0)[:3].T  # (C, 3)
    assert body["n_images"] == len(data.x_test) and body["split"] == "test"
    assert np.allclose(body["values"], expected, atol=1e-4)
    assert body["crops"]["shape"] == [acts.shape[1], 3, 1, 3, 3]  # a 3x3 first layer sees 3x3 patches
    best = body["image_index"][0][0]
    assert np.isclose(maxima[best, 0], expected[0, 0], atol=1e-5)


def test_top_patches_need_a_checkpoint(client):
    response = client.get("/api/runs/0/patches?layer=conv1")
    assert response.status_code == 400
    assert response.json()["detail"] == ("run 0 has no checkpoint at epoch 3; top patches need the model's weights "
                                         "(checkpoint epochs: none)")


def test_wide_layers_are_sent_as_their_channel_mean(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient
    from serve_helpers import write_run

    from kernelscope.serve import create_app, runs
    from kernelscope.train.rundir import load_run

    monkeypatch.setattr(runs, "MAX_KERNEL_VALUES", 100)  # conv2 has 4*6*3*3 = 216 values
    path = write_run(tmp_path / "run", epochs=1)
    with TestClient(create_app([path])) as client:
        body = client.get("/api/runs/0/kernels?layer=conv2").json()
    assert body["kernels"]["shape"] == [4, 1, 3, 3]
    assert body["note"] == "mean over the 6 input channels: the layer's 216 values are more than 100 sent at once"
    expected = load_run(path).kernels(1, "conv2").mean(axis=1)
    assert np.allclose(np.reshape(body["kernels"]["data"], (4, 3, 3)), expected, atol=1e-5)


def test_several_runs_by_index_and_a_run_still_training(tmp_path):
    """Two runs are ids 0 and 1; a run that gains an epoch while served shows it (and its metrics) on reload."""
    from fastapi.testclient import TestClient
    from serve_helpers import write_run

    from kernelscope.serve import create_app
    from kernelscope.train import rundir

    first, second = write_run(tmp_path / "a", epochs=1), write_run(tmp_path / "b", epochs=2)
    with TestClient(create_app([first, second])) as client:
        assert [(r["id"], r["name"], r["epochs"]) for r in client.get("/api/runs").json()] == [
            (0, "a", [0, 1]), (1, "b", [0, 1, 2])]
        assert client.get("/api/runs/0/kernels?epoch=2").status_code == 400
        manifest = rundir.read_manifest(first)  # epoch 2 of run 0 arrives while it is served
        rundir.write_kernels(first, {k: v * 2 for k, v in rundir.load_run(first).kernels(1).items()}, epoch=2)
        manifest["metrics"].append({"epoch": 2, "train_loss": 0.1, "train_acc": 0.9, "test_loss": 0.2,
                                    "test_acc": 0.8, "seconds": 0.1})
        rundir.write_manifest(first, manifest)
        summary = client.get("/api/runs/0").json()
        assert summary["epochs"] == [0, 1, 2] and summary["metrics"][-1]["epoch"] == 2
        assert client.get("/api/runs/0/kernels?epoch=2").json()["epoch"] == 2


def test_foreign_host_names_are_refused(client):
    """DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 sends Host: evil.example."""
    assert client.get("/api/runs", headers={"host": "evil.example:8765"}).status_code == 400
    assert client.get("/api/runs", headers={"host": "127.0.0.1:8765"}).status_code == 200
    assert client.get("/api/runs", headers={"host": "localhost:8765"}).status_code == 200
