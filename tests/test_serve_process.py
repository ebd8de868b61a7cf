"""A real `cnnclf serve` process on a free port: it answers, and SIGTERM drains then exits 0."""

import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
from helpers import WAIT_S, communicate, run_process, start_server


def post_image(url: str, path, name: str = "image.png", timeout: float = WAIT_S):
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


@pytest.mark.slow
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
        # The server shows no sign of a request waiting in its batcher, so this gives it a
        # second to get there (2.5 s of batching wait above); a slower machine may send the
        # SIGTERM first, and the request then fails to connect, not a wrong answer.
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        client.join(timeout=WAIT_S)
        assert not client.is_alive(), f"waited {WAIT_S} s for the in-flight request's answer"
        assert answer["result"][0] == 200 and answer["result"][1][0]["path"] == "in-flight.png"
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
