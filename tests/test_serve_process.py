"""A real `cnnclf serve` process on a free port: it answers, and SIGTERM drains then exits 0."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model, *args):
    """(process, base URL) of `cnnclf serve`, once /readyz answers 200."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cnnclf.cli",
            "serve",
            "--model",
            str(model),
            "--port",
            str(port),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.communicate()
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
                if response.status == 200:
                    return process, url
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.2)


def post_image(url: str, path, name: str = "image.png", timeout: float = 60):
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    body += path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        url + "/predict",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, json.loads(response.read())


def test_serve_answers_and_drains_on_sigterm(binary_bundle, binary_tree):
    image = sorted((binary_tree / "test_set" / "vstripes").iterdir())[0]
    # A long batching wait keeps the next request in flight while SIGTERM arrives.
    process, url = start_server(binary_bundle, "--max-wait-ms", "2500")
    try:
        status, rows = post_image(url, image, "one.png")
        assert status == 200 and rows[0]["path"] == "one.png"
        answer = {}
        client = threading.Thread(
            target=lambda: answer.update(result=post_image(url, image, "in-flight.png"))
        )
        client.start()
        time.sleep(1.0)  # the request waits in the batcher now
        process.send_signal(signal.SIGTERM)
        client.join(timeout=60)
        assert answer["result"][0] == 200 and answer["result"][1][0]["path"] == "in-flight.png"
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", timeout=2)


def test_ctrl_c_exits_0(binary_bundle):
    process, url = start_server(binary_bundle)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
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
        result = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
        )
        assert result.stdout.strip().endswith("False"), (args, result.stdout, result.stderr)
    assert (
        "--max-upload-mb"
        in subprocess.run(
            [sys.executable, "-m", "cnnclf.cli", "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )
