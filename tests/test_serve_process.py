"""A real `cnnclf serve` process on a free port: it answers, says so on its console, and SIGTERM
drains then exits 0; a busy port is one line and exit code 2."""

import json
import re
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest
from helpers import WAIT_S, communicate, run_process, start_server, wait_for


def post_image(url: str, path, name: str = "image.png", timeout: float = WAIT_S):
    content_type, body = multipart(path, name)
    request = urllib.request.Request(
        url + "/predict", data=body, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, json.loads(response.read())


def multipart(path, name: str) -> tuple[str, bytes]:
    """(content type, body) of a multipart upload of `path` as `name`."""
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    body += path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def readyz(url: str) -> dict:
    with urllib.request.urlopen(url + "/readyz", timeout=WAIT_S) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_serve_answers_and_drains_on_sigterm(binary_bundle, binary_tree):
    image = sorted((binary_tree / "test_set" / "vstripes").iterdir())[0]
    process, url = start_server(binary_bundle)
    try:
        status, rows = post_image(url, image, "one.png")
        assert status == 200 and rows[0]["path"] == "one.png"
        # A request held open halfway through its body is in flight for as long as the test
        # likes: SIGTERM arrives while the server is reading it, never before or after.
        content_type, body = multipart(image, "in-flight.png")
        client = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        client.settimeout(WAIT_S)
        client.sendall(
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        wait_for(lambda: readyz(url)["in_flight"] == 1, "/readyz to count the held request")
        process.send_signal(signal.SIGTERM)
        client.sendall(body[len(body) // 2 :])
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        client.close()
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer[:500]
        if b"chunked" in head.lower():
            payload = payload.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
        assert json.loads(payload)[0]["path"] == "in-flight.png"
        _, err = communicate(process, "the server to drain and exit after SIGTERM")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", timeout=2)


@pytest.mark.slow
def test_sigterm_with_a_stalled_client_stops_within_the_grace(binary_bundle, binary_tree):
    # A client that sends half its body and then nothing held the stop for uvicorn's 30 s,
    # then a CancelledError traceback: now it gets a 503 when --shutdown-grace runs out.
    image = sorted((binary_tree / "test_set" / "vstripes").iterdir())[0]
    process, url = start_server(binary_bundle, "--shutdown-grace", "1", "--body-timeout", "60")
    try:
        content_type, body = multipart(image, "stalled.png")
        client = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        client.settimeout(WAIT_S)
        client.sendall(
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        wait_for(lambda: readyz(url)["in_flight"] == 1, "/readyz to count the stalled request")
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        answered = time.monotonic() - start
        client.close()
        _, err = communicate(process, "the server to stop after SIGTERM")
        stopped = time.monotonic() - start
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer[:500]
    assert "stopping" in json.loads(payload)["error"]
    assert answered < 1 + 2, answered  # the grace, less its margin, plus a loaded machine's
    # The interpreter's teardown (TensorFlow's) comes on top: still well under docker's 10 s.
    assert stopped < 10, stopped
    assert process.returncode == 0, err
    assert "Traceback" not in err and "CancelledError" not in err, err


@pytest.mark.slow
def test_ctrl_c_exits_0(binary_bundle):
    process, _ = start_server(binary_bundle)
    process.send_signal(signal.SIGINT)
    _, err = communicate(process, "the server to exit after Ctrl-C")
    assert process.returncode == 0, err
    assert "Traceback" not in err and "interrupted" not in err


def test_help_and_option_errors_do_not_import_tensorflow(tmp_path):
    code = (
        "import sys\nfrom cnnclf.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
        "    print('exit', e.code)\nprint('tensorflow' in sys.modules)\n"
    )
    for args in (
        ["serve", "--help"],
        ["serve", "--port", "nope"],
        ["serve", "--model", str(tmp_path / "missing")],
    ):
        result = run_process([sys.executable, "-c", code, *args], f"cnnclf {' '.join(args)}")
        assert result.stdout.strip().endswith("False"), (args, result.stdout, result.stderr)
    assert (
        "--max-upload-mb"
        in run_process(
            [sys.executable, "-m", "cnnclf.cli", "serve", "--help"], "serve --help"
        ).stdout
    )


@pytest.mark.slow
def test_console_says_ready_then_one_line_per_request(binary_bundle, binary_tree):
    image = sorted((binary_tree / "test_set" / "vstripes").iterdir())[0]
    process, url = start_server(binary_bundle, "--name", "stripes")
    try:
        assert post_image(url, image)[0] == 200
        with urllib.request.urlopen(url + "/v1/models/stripes/metadata", timeout=WAIT_S) as r:
            card = json.loads(r.read())["metadata"]
        process.send_signal(signal.SIGTERM)
        _, err = communicate(process, "the server to exit after SIGTERM")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert card["name"] == "stripes" and card["bundle"] == binary_bundle.name
    lines = err.splitlines()
    ready = [line for line in lines if line.startswith("ready")]
    assert ready == [
        f'ready: serving {binary_bundle} as "stripes" (classes hstripes, vstripes) on {url} '
        "(Ctrl-C stops it)"
    ], err
    requests = [line for line in lines if re.fullmatch(r"(GET|POST) /\S* \d{3} \d+\.\d ms", line)]
    assert [line.rsplit(" ", 2)[0] for line in requests] == [
        "POST /predict 200",
        "GET /v1/models/stripes/metadata 200",
    ], err  # the /readyz polls of start_server are not logged without --verbose
    assert lines.index(ready[0]) < lines.index(requests[0])
    assert not [line for line in lines if line.startswith(("INFO:", "ERROR:"))], err
    assert process.returncode == 0, err


def test_busy_port_is_one_line_and_exit_2_before_the_model_loads(tmp_path):
    # Not a model at all: were it loaded before the port is checked, the error would be its.
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not onnx")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_process(
            [
                sys.executable,
                "-m",
                "cnnclf.cli",
                "serve",
                "--model",
                str(model),
                "--port",
                str(port),
            ],
            "cnnclf serve on a busy port",
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: --port {port}: 127.0.0.1:{port} is already in use; stop what is using it or "
        "pass another --port"
    ]
    assert "Traceback" not in result.stderr and "loading" not in result.stderr
