"""`cnnclf serve` through its real ASGI app (FastAPI's TestClient): every route, every bad input."""

import asyncio
import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import UNREADABLE, WAIT_S, pattern_image, run_cli, wait_for, write_bad_case
from PIL import Image

from cnnclf.bundle import load_bundle
from cnnclf.bundle.exported_models import load_export
from cnnclf.serve.app import ServeSettings, create_app
from cnnclf.serve.batcher import MicroBatcher, padded_sizes
from cnnclf.serve.server import exposure_warning

TOKEN = "s3cret-token"
BASE_URL = "http://127.0.0.1:8000"


def _client(bundle, **settings):
    # The address a browser would type: the Host guard refuses TestClient's "testserver".
    client = TestClient(create_app(bundle, ServeSettings(**settings)), base_url=BASE_URL)
    client.__enter__()  # runs the lifespan: batcher started, warm-up scheduled
    wait_for(lambda: client.get("/readyz").status_code == 200, "/readyz to answer 200", poll=0.05)
    return client


@pytest.fixture(scope="module")
def binary_model(binary_bundle):
    return load_bundle(binary_bundle)


@pytest.fixture(scope="module")
def client(binary_model):
    client = _client(binary_model, name="tiny", max_upload_mb=1)
    yield client
    client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def multi_client(multi_bundle):
    client = _client(load_bundle(multi_bundle), name="multi")
    yield client
    client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def token_client(binary_model):
    client = _client(binary_model, name="tiny", token=TOKEN)
    yield client
    client.__exit__(None, None, None)


def _images(tree, n=3):
    return sorted(p for p in (tree / "test_set").rglob("*") if p.is_file())[:n]


def _files(paths):
    return [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def _b64(path):
    return base64.b64encode(path.read_bytes()).decode("ascii")


@pytest.mark.slow
def test_predict_matches_cli_json(client, binary_bundle, binary_tree):
    paths = _images(binary_tree, 4)
    response = client.post("/predict", files=_files(paths))
    assert response.status_code == 200, response.text
    served = response.json()
    cli = json.loads(
        run_cli("predict", "--model", binary_bundle, "--format", "json", *paths).stdout
    )
    assert [row["path"] for row in served] == [p.name for p in paths]
    for got, want in zip(served, cli):
        assert set(got) == set(want) == {"path", "label", "probability", "probabilities"}
        assert got["label"] == want["label"]
        for name, p in want["probabilities"].items():
            assert got["probabilities"][name] == pytest.approx(p, abs=1e-5)


@pytest.mark.slow
def test_binary_threshold_and_options(client, binary_tree):
    [path] = _images(binary_tree, 1)
    low = client.post("/predict?threshold=0.000001", files=_files([path])).json()[0]
    high = client.post("/predict?threshold=0.999999", files=_files([path])).json()[0]
    assert (low["label"], high["label"]) == ("vstripes", "hstripes")
    response = client.post("/predict?top_k=2", files=_files([path]))
    assert response.status_code == 400 and "binary" in response.json()["error"]
    response = client.post("/predict?threshold=abc", files=_files([path]))
    assert response.status_code == 422 and "threshold" in response.json()["error"]


@pytest.mark.slow
def test_multiclass_has_top_k(multi_client, multi_bundle, multi_tree):
    paths = _images(multi_tree, 2)
    served = multi_client.post("/predict", files=_files(paths)).json()
    cli = json.loads(
        run_cli(
            "predict", "--model", multi_bundle, "--format", "json", "--top-k", "3", *paths
        ).stdout
    )
    for got, want in zip(served, cli):
        assert set(got) == set(want) and "top_k" in got
        assert [t["label"] for t in got["top_k"]] == [t["label"] for t in want["top_k"]]
    two = multi_client.post("/predict?top_k=2", files=_files(paths[:1])).json()[0]
    assert len(two["top_k"]) == 2
    response = multi_client.post("/predict?threshold=0.3", files=_files(paths[:1]))
    assert response.status_code == 400 and "3 classes" in response.json()["error"]


@pytest.mark.slow
@pytest.mark.parametrize("case", UNREADABLE)
def test_bad_images_get_422_and_the_server_goes_on(client, binary_tree, tmp_path, case):
    bad = write_bad_case(case, tmp_path)
    response = client.post("/predict", files=_files([bad]))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error.startswith(bad.name + ": ")
    if case == "decompression_bomb":
        assert "decompression bomb" in error
    if case == "empty_file":
        assert "empty" in error
    # The same bad file in the TF-Serving route, then a good request: served normally.
    response = client.post("/v1/models/tiny:predict", json={"instances": [{"b64": _b64(bad)}]})
    assert response.status_code == 422 and response.json()["error"]
    assert client.post("/predict", files=_files(_images(binary_tree, 1))).status_code == 200


@pytest.mark.slow
def test_oversize_bodies_get_413(client, binary_tree):
    big = b"\xff\xd8" + b"\0" * (2 * 2**20)  # 2 MB against the fixture's --max-upload-mb 1
    response = client.post("/predict", files=[("file", ("big.jpg", big, "image/jpeg"))])
    assert response.status_code == 413 and "max-upload-mb" in response.json()["error"]

    def chunks():  # no Content-Length: refused while streaming, not after reading it all
        yield b"--b\r\nContent-Disposition: form-data; name=file; filename=x.jpg\r\n\r\n"
        for _ in range(64):
            yield b"\0" * 65536

    response = client.post(
        "/predict", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413
    response = client.post(
        "/v1/models/tiny:predict",
        content=b"{" + b" " * (2 * 2**20),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert client.post("/predict", files=_files(_images(binary_tree, 1))).status_code == 200


@pytest.mark.slow
def test_wrong_content_types_and_malformed_bodies(client, binary_tree):
    [path] = _images(binary_tree, 1)
    cases = [
        (client.post("/predict", json={"x": 1}), 415, "multipart/form-data"),
        (
            client.post("/predict", content=b"abc", headers={"Content-Type": "image/png"}),
            415,
            "image/png",
        ),
        (
            client.post(
                "/predict",
                content=b"--b\r\nContent-Disposition: form-data; "
                b'name="note"\r\n\r\nhi\r\n--b--\r\n',
                headers={"Content-Type": "multipart/form-data; boundary=b"},
            ),
            400,
            "no file",
        ),
        (
            client.post(
                "/predict", content=b"garbage", headers={"Content-Type": "multipart/form-data"}
            ),
            400,
            "boundary",
        ),
        (client.post("/v1/models/tiny:predict", files=_files([path])), 415, "application/json"),
        (
            client.post(
                "/v1/models/tiny:predict",
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            ),
            400,
            "malformed JSON",
        ),
        (client.post("/v1/models/tiny:predict", json={"inputs": []}), 400, "instances"),
        (
            client.post("/v1/models/tiny:predict", json={"instances": [{"b64": "%%%"}]}),
            400,
            "base64",
        ),
        (client.post("/v1/models/tiny:predict", json={"instances": [42]}), 400, "instances[0]"),
        (client.post("/v1/models/other:predict", json={"instances": []}), 404, "'tiny'"),
        (client.get("/no/such/route"), 404, None),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error and (words is None or words in error), error
    assert client.post("/predict", files=_files([path])).status_code == 200


@pytest.mark.slow
def test_tf_serving_routes(client, binary_model, binary_tree):
    paths = _images(binary_tree, 3)
    body = {
        "instances": [
            {"b64": _b64(paths[0])},
            {"image_bytes": {"b64": _b64(paths[1])}},
            {"b64": _b64(paths[2])},
        ]
    }
    response = client.post("/v1/models/tiny:predict", json=body)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    from cnnclf.inference.predict import score_paths

    for got, (_, row) in zip(predictions, score_paths(binary_model, [str(p) for p in paths])):
        assert got == pytest.approx(row.tolist(), abs=1e-5)
    status = client.get("/v1/models/tiny").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    card = client.get("/v1/models/tiny/metadata").json()["metadata"]
    assert card["classes"] == ["hstripes", "vstripes"] and card["image_size"] == [16, 16]
    assert card["color_mode"] == "rgb" and card["class_mode"] == "binary"
    assert "accuracy" in card["validation"] and card["trained"] and card["explain"]
    assert card["architecture"] == "conv_blocks"
    assert client.get("/v1/models/nope/metadata").status_code == 404


@pytest.mark.slow
def test_explain_returns_a_png(client, binary_tree, tmp_path):
    [path] = _images(binary_tree, 1)
    response = client.post("/explain", files=_files([path]))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-label"] in {"hstripes", "vstripes"}
    with Image.open(io.BytesIO(response.content)) as png:
        assert png.width >= 2 * 224  # image and heatmap side by side
    response = client.post("/explain", files=_files([write_bad_case("truncated_jpeg", tmp_path)]))
    assert response.status_code == 422
    # A large photo is drawn from a small upright copy, never decoded at full size again.
    large = tmp_path / "large.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 3000 x 1000, upright 1000 x 3000
    pattern_image("vstripes", 1000, 3000, seed=3).save(large, exif=exif.tobytes())
    response = client.post("/explain", files=_files([large]))
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(response.content)) as png:
        assert png.width == 2 * 224 and png.height > 3 * 224  # upright: tall, not wide


@pytest.mark.slow
def test_exports_serve_predictions_but_not_grad_cam(binary_bundle, binary_tree, tmp_path):
    out = tmp_path / "model.onnx"
    result = run_cli("export", "--model", binary_bundle, "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.output
    client = _client(load_export(out), name="exported")
    try:
        paths = _images(binary_tree, 2)
        rows = client.post("/predict", files=_files(paths)).json()
        assert [r["path"] for r in rows] == [p.name for p in paths]
        card = client.get("/v1/models/exported/metadata").json()["metadata"]
        assert card["kind"] == "onnx export" and card["explain"] is False
        response = client.post("/explain", files=_files(paths[:1]))
        assert response.status_code == 400 and "Keras bundle" in response.json()["error"]
    finally:
        client.__exit__(None, None, None)


@pytest.mark.slow
def test_the_token_is_required_on_every_api_route(token_client, binary_tree):
    [path] = _images(binary_tree, 1)
    body = {"instances": [{"b64": _b64(path)}]}
    calls = [
        lambda h: token_client.post("/predict", files=_files([path]), headers=h),
        lambda h: token_client.post("/explain", files=_files([path]), headers=h),
        lambda h: token_client.post("/v1/models/tiny:predict", json=body, headers=h),
        lambda h: token_client.get("/v1/models/tiny", headers=h),
        lambda h: token_client.get("/v1/models/tiny/metadata", headers=h),
        lambda h: token_client.get("/card", headers=h),
    ]
    for call in calls:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = call(headers)
            assert response.status_code == 401, response.text
            assert "token" in response.json()["error"]
            assert response.headers["www-authenticate"] == "Bearer"
        assert call({"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    for open_route in ("/", "/static/app.js", "/healthz", "/readyz"):
        assert token_client.get(open_route).status_code == 200


@pytest.mark.slow
def test_no_cors_unless_asked(client, binary_model):
    headers = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.get("/healthz", headers=headers).headers
    assert client.options("/predict", headers=headers).status_code == 403
    cors = _client(binary_model, cors_origins=("https://app.example",))
    try:
        response = cors.options("/predict", headers={**headers, "Origin": "https://app.example"})
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        response = cors.get("/healthz", headers=headers)
        assert "access-control-allow-origin" not in response.headers
    finally:
        cors.__exit__(None, None, None)


@pytest.mark.slow
def test_page_static_files_health_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>cnnclf · tiny</title>" in page.text
    # The notice is in the page itself, before any script runs or a token is asked for.
    assert '<p id="notice" role="note">Research use only' in page.text
    assert client.get("/card").json() == client.get("/v1/models/tiny/metadata").json()["metadata"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing external
    for name in ("app.js", "style.css"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and "http" not in response.text
    for name in ("index.html", "..%2Fapp.py", "%2Fetc%2Fpasswd", "../app.py"):
        assert client.get(f"/static/{name}").status_code == 404
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    paths = client.get("/openapi.json").json()["paths"]
    for route in (
        "/predict",
        "/explain",
        "/v1/models/{name}:predict",
        "/v1/models/{name}",
        "/v1/models/{name}/metadata",
        "/card",
        "/healthz",
        "/readyz",
    ):
        assert route in paths


@pytest.mark.slow
def test_concurrent_requests_share_model_calls(client, binary_tree):
    from concurrent.futures import ThreadPoolExecutor

    paths = _images(binary_tree, 8)
    batcher = client.app.state.service.batcher
    before = (batcher.batches, batcher.images)
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(lambda p: client.post("/predict", files=_files([p])).status_code, paths * 2)
        )
    assert codes == [200] * 16
    assert batcher.images - before[1] == 16
    assert batcher.batches - before[0] <= 16


def test_micro_batcher_bounds_and_order():
    calls = []

    def predict(x):
        calls.append(len(x))
        return x.reshape(len(x), -1)[:, :1] * 2

    async def main():
        batcher = MicroBatcher(predict, max_batch_size=4, max_wait_ms=50)
        await batcher.start()
        rows = await asyncio.gather(
            *(batcher.submit(np.full((2, 2, 1), i, np.uint8)) for i in range(10))
        )
        await batcher.stop()
        return [float(r[0]) for r in rows], batcher.batches

    values, batches = asyncio.run(main())
    assert values == [2.0 * i for i in range(10)]
    assert batches == 3 and calls == [4, 4, 2]  # 4 + 4 + 2, each a padded size


def test_micro_batcher_waits_only_for_announced_images():
    calls = []

    def predict(x):
        calls.append(len(x))
        return np.zeros((len(x), 1))

    async def main():
        # An hour's wait for company: the three announced images below make one batch on any
        # machine, and a lone image that waited for company would never be answered in time.
        batcher = MicroBatcher(predict, max_batch_size=8, max_wait_ms=3_600_000)
        await batcher.start()
        try:
            await asyncio.wait_for(
                batcher.submit(np.zeros((2, 2, 1), np.uint8), expected=False), WAIT_S
            )
            alone = True
        except TimeoutError:
            alone = False

        async def late(delay):  # announced now, decoded `delay` seconds later
            await asyncio.sleep(delay)
            return await batcher.submit(np.zeros((2, 2, 1), np.uint8))

        batcher.expect(3)
        await asyncio.gather(late(0), late(0.05), late(0.1))
        await batcher.stop()
        return alone

    alone = asyncio.run(main())
    assert alone, "a lone image waited max_wait_ms for company"
    assert calls == [1, 4]  # the three announced images made one batch (padded to 4)
    assert padded_sizes(32) == [1, 2, 4, 8, 16, 32] and padded_sizes(12) == [1, 2, 4, 8, 12]


def test_exposure_warning():
    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("localhost", None) is None
    warning = exposure_warning("0.0.0.0", None)
    assert "other machines" in warning and "--token" in warning
    assert "--token" not in exposure_warning("0.0.0.0", "t")


def test_cli_errors_are_one_line(tmp_path, binary_tree):
    result = run_cli("serve", "--model", tmp_path / "missing")
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0
    assert "no such folder" in result.output and "Traceback" not in result.output
    result = run_cli("serve", "--model", binary_tree, "--port", "70000")
    assert result.exit_code == 2 and "--port" in result.output
    result = run_cli("serve", "--model", binary_tree, "--token", " ")
    assert result.exit_code == 2 and "--token" in result.output
    result = run_cli("serve", "--model", binary_tree / "training_set")
    assert result.exit_code == 1 and "not a complete cnnclf bundle" in result.output


@pytest.mark.slow
def test_upload_names_never_reach_the_file_system(client, binary_tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    [path] = _images(binary_tree, 1)
    image = pattern_image("hstripes", 20, 20, seed=1)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    for name in ("../../etc/passwd", str(path), "/dev/zero"):
        response = client.post("/predict", files=[("file", (name, buffer.getvalue(), "image/png"))])
        assert response.status_code == 200 and response.json()[0]["path"] == name
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_card_counts_the_validation_images(client):
    # binary_bundle validated on its test_set: 4 images a class.
    card = client.get("/v1/models/tiny/metadata").json()["metadata"]
    assert card["validation_images"] == 8
    assert "accuracy" in card["validation"]


def _one_line_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error and "\n" not in error and "Traceback" not in error and "/tmp" not in error
    return error


@pytest.mark.slow
def test_foreign_hosts_and_origins_are_refused(binary_model, client, binary_tree):
    files = _files(_images(binary_tree, 1))
    # DNS rebinding: the attacker's name in Host. Refused on every route, the page included.
    for route in ("/", "/readyz", "/v1/models/tiny/metadata"):
        error = _one_line_error(client.get(route, headers={"Host": "evil.example"}), 421)
        assert "--allowed-host 'evil.example'" in error
    # A cross-site page driving the model: its Origin. The page's own origin is answered.
    response = client.post("/predict", files=files, headers={"Origin": "https://evil.example"})
    assert "--cors-origin" in _one_line_error(response, 403)
    assert client.post("/predict", files=files, headers={"Origin": BASE_URL}).status_code == 200
    for host in ("localhost:8000", "[::1]:8000", "192.168.7.7:8000"):
        assert client.get("/readyz", headers={"Host": host}).status_code == 200, host
    named = _client(binary_model, host="0.0.0.0", allowed_hosts=("gpu-box.lan",))
    try:
        headers = {"Host": "gpu-box.lan:8000", "Origin": "http://gpu-box.lan:8000"}
        assert named.post("/predict", files=files, headers=headers).status_code == 200
        assert named.get("/readyz", headers={"Host": "other.lan"}).status_code == 421
    finally:
        named.__exit__(None, None, None)


@pytest.mark.slow
def test_hostile_bodies_get_one_line_4xx_never_500(client, binary_tree):
    json_headers = {"Content-Type": "application/json"}
    response = client.post("/v1/models/tiny:predict", content=b"[" * 5000, headers=json_headers)
    assert "nested" in _one_line_error(response, 400)
    many = b'{"instances": [' + b",".join([b'{"b64": ""}'] * 50_000) + b"]}"
    response = client.post("/v1/models/tiny:predict", content=many, headers=json_headers)
    assert "instances" in _one_line_error(response, 413)
    long = "x" * 5000
    response = client.post(
        "/predict",
        content=f"--{long}\r\n".encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={long}"},
    )
    assert "RFC 2046" in _one_line_error(response, 400)
    empty = b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n\r\n' * 20_000
    response = client.post(
        "/predict",
        content=empty + b"--b--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert "form fields" in _one_line_error(response, 413)
    assert client.post("/predict", files=_files(_images(binary_tree, 1))).status_code == 200


@pytest.mark.slow
def test_with_a_token_nothing_public_names_the_model(binary_model):
    secret = _client(binary_model, name="secret-model", token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        page = secret.get("/").text
        assert "<title>cnnclf</title>" in page and "hstripes" not in page
        assert "secret-model" not in page and "Research use only" in page
        assert secret.get("/readyz").json() == {"status": "ready"}
        assert secret.get("/readyz", headers=auth).json()["model"] == "secret-model"
        assert secret.get("/openapi.json").status_code == 401
        spec = secret.get("/openapi.json", headers=auth).json()
        assert "hstripes" not in spec["info"]["description"] and "/predict" in spec["paths"]
        for route in ("/docs", "/redoc"):
            assert secret.get(route).status_code == 404
    finally:
        secret.__exit__(None, None, None)
    plain = _client(binary_model)  # no token: the API pages as they always were
    try:
        assert plain.get("/docs").status_code == 200 and plain.get("/redoc").status_code == 200
    finally:
        plain.__exit__(None, None, None)
    documented = _client(binary_model, token=TOKEN, docs=True)
    try:
        assert documented.get("/openapi.json").status_code == 200
        assert "swagger-ui" in documented.get("/docs").text
        assert documented.get("/redoc").status_code == 200
    finally:
        documented.__exit__(None, None, None)


def test_token_file_and_token_warnings(tmp_path, binary_tree):
    result = run_cli("serve", "--model", binary_tree, "--token-file", tmp_path / "missing")
    assert result.exit_code == 2 and "--token-file" in result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = run_cli("serve", "--model", binary_tree, "--token-file", empty)
    assert result.exit_code == 2 and "empty" in result.output
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    result = run_cli("serve", "--model", binary_tree, "--token-file", token, "--token", "x")
    assert result.exit_code == 2 and "not also --token" in result.output
