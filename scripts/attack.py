"""A bounded attack on `cnnclf serve`, the decoder and bundle loading, before and after.

    git worktree add /tmp/cnnclf-base 8166ac2        # the code to compare against
    python scripts/attack.py --baseline /tmp/cnnclf-base --json attack.json

Each case runs against a server started from each source tree in turn (the baseline's
`cnnclf` and this checkout's, same bundle, same machine, one run), while a normal client posts
one small image every 0.25 s. For every case and tree it reports:

- the server's answer to the attack (status codes, or what happened to the connections);
- the server's peak RSS during the case, against its RSS when idle and ready;
- the slowest normal request during the case (the goal: under 1 s), and failed ones;
- how many answers were 500s (the goal: none).

The bundle cases run `cnnclf predict` on a tampered copy of the bundle instead: its wall time,
peak RSS and last stderr line. The server runs with `ulimit -n 1024`, as the review did.

Everything is loopback-only and bounded: connection counts, bytes and seconds are fixed, every
request has a timeout, and a case that kills the server restarts it for the next. About 10
minutes with the defaults on 2 cores (`--hold` shortens the connection cases).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_IMAGE = next((REPO / "data" / "demo" / "test_set").rglob("*.png"))
SERVER_FDS = 1024


# --- what the attacks send ---------------------------------------------------------------


def png(width: int, height: int, idat: bytes, mode: int = 0) -> bytes:
    """A PNG with this header and this IDAT payload (no check that they agree)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def height_bomb() -> bytes:
    """1 x 80,000,000 grayscale, the IDAT cut after a few bytes: 69 bytes in all."""
    return png(1, 80_000_000, zlib.compress(b"\x00\x00" * 8)[:6])


def short_stream_png() -> bytes:
    """64 x 64 whose zlib stream is complete but holds only 8 of the 64 rows."""
    rows = b"".join(b"\x00" + bytes([200]) * 64 for _ in range(8))
    return png(64, 64, zlib.compress(rows))


EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n"
    b"newpath 0 0 moveto 16 16 lineto stroke showpage\n%%EOF\n"
)


def multipart(files: list[tuple[str, bytes]], boundary: str | None = None) -> tuple[bytes, str]:
    boundary = boundary or uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def empty_fields(count: int) -> tuple[bytes, str]:
    boundary = "b"
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="a"\r\n\r\n\r\n'.encode()
    kind = f"multipart/form-data; boundary={boundary}"
    return part * count + f"--{boundary}--\r\n".encode(), kind


def request(port: int, method: str, path: str, body: bytes = b"", headers=None, timeout=60.0):
    """(status, first 300 bytes of the answer), or (the exception's name, '') on failure."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.read()[:300].decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__, ""
    finally:
        conn.close()


def post_files(port: int, files, timeout=120.0, **headers):
    body, kind = multipart(files)
    return request(port, "POST", "/predict", body, {"Content-Type": kind, **headers}, timeout)


# --- the server and what watches it -------------------------------------------------------


class Server:
    """`cnnclf serve` from one source tree, with its file descriptors limited like the review's."""

    def __init__(self, tree: Path, bundle: Path, work: Path):
        self.tree, self.bundle, self.work = tree, bundle, work
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.log = work / "serve.log"

    def start(self) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(self.tree)}

        def limit_fds():
            resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_FDS, SERVER_FDS))

        self.process = subprocess.Popen(
            [sys.executable, "-m", "cnnclf.cli", "serve", "--model", str(self.bundle)]
            + ["--port", str(self.port)],
            cwd=self.work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
            preexec_fn=limit_fds,
        )
        deadline = time.monotonic() + 240
        while request(self.port, "GET", "/readyz", timeout=2)[0] != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server from {self.tree} did not start:\n{self.log_tail()}")
            time.sleep(0.2)
        for _ in range(5):  # allocator and connection warm-up, not measured
            post_files(self.port, [(DEMO_IMAGE.name, DEMO_IMAGE.read_bytes())])
        time.sleep(1)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_mb(self) -> float:
        return rss_mb(self.process.pid) if self.alive() else 0.0

    def log_bytes(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Watch:
    """While a case runs: the server's peak RSS, and a normal client's slowest request."""

    def __init__(self, server: Server):
        self.server = server
        self.peak = 0.0
        self.latencies: list[float] = []
        self.failures: Counter = Counter()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._probe, daemon=True),
        ]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        # A case that ends at once still gets a few normal requests measured after it.
        deadline = time.monotonic() + 10
        while len(self.latencies) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        for thread in self._threads:
            thread.join(90)

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.server.rss_mb())
            if self._stop.wait(0.05):
                return

    def _probe(self) -> None:
        image = [(DEMO_IMAGE.name, DEMO_IMAGE.read_bytes())]
        while True:
            start = time.perf_counter()
            status, _ = post_files(self.server.port, image, timeout=60)
            self.latencies.append(time.perf_counter() - start)
            if status != 200:
                self.failures[str(status)] += 1
            if self._stop.wait(0.25):
                return


# --- the cases ----------------------------------------------------------------------------


def hold_sockets(port: int, count: int, seconds: float, send=None) -> str:
    """Opens `count` connections, lets `send(sock, tick)` trickle bytes once a second, and
    says how many the server had closed when `seconds` ran out."""
    socks, refused = [], 0
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", port))
            socks.append(sock)
        except OSError:
            refused += 1
            sock.close()
    start, tick = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        if send:
            for sock in socks:
                with contextlib.suppress(OSError):
                    send(sock, tick)
        tick += 1
        time.sleep(1)
    closed = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            closed += sock.recv(1 << 16) is not None  # data or b"" (closed): the server acted
        except BlockingIOError:
            pass  # still open, nothing said
        except OSError:
            closed += 1
        sock.close()
    return f"{closed}/{len(socks)} closed by the server within {seconds:g} s; {refused} refused"


def case_idle(server: Server, hold: float) -> str:
    before = server.log_bytes()
    answer = hold_sockets(server.port, 1100, hold)
    return f"{answer}; log grew {(server.log_bytes() - before) / 1e6:.2f} MB"


def case_slow_headers(server: Server, hold: float) -> str:
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 200

    def send(sock, tick):
        if tick < len(head):
            sock.send(head[tick : tick + 1])

    return hold_sockets(server.port, 200, hold, send)


def case_slow_bodies(server: Server, hold: float) -> str:
    head = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
    )

    def send(sock, tick):
        sock.send(head if tick == 0 else b"x")

    return hold_sockets(server.port, 20, hold, send)


def concurrently(count: int, call) -> str:
    with ThreadPoolExecutor(count) as pool:
        answers = list(pool.map(lambda _: call(), range(count)))
    statuses = Counter(str(status) for status, _ in answers)
    leaks = sum("/tmp" in text or "gs " in text or "Traceback" in text for _, text in answers)
    sample = next((text for _, text in answers if text), "")
    said = f"; says {sample[:110]!r}" if sample else ""
    return f"{dict(statuses)}{'; LEAKS a path or command' if leaks else ''}{said}"


def case_height_bombs(server: Server, hold: float) -> str:
    return concurrently(3, lambda: post_files(server.port, [("tall.png", height_bomb())]))


def case_short_stream(server: Server, hold: float) -> str:
    return concurrently(1, lambda: post_files(server.port, [("short.png", short_stream_png())]))


def case_eps(server: Server, hold: float) -> str:
    return concurrently(1, lambda: post_files(server.port, [("scan.png", EPS)]))


def case_foreign_host(server: Server, hold: float) -> str:
    return concurrently(
        1, lambda: request(server.port, "GET", "/readyz", headers={"Host": "rebound.example"})
    )


def case_foreign_origin(server: Server, hold: float) -> str:
    image = [(DEMO_IMAGE.name, DEMO_IMAGE.read_bytes())]
    return concurrently(1, lambda: post_files(server.port, image, Origin="https://evil.example"))


def case_big_uploads(server: Server, hold: float) -> str:
    data = os.urandom(int(19.5 * 2**20))
    answers = [concurrently(48, lambda: post_files(server.port, [("big.png", data)])) for _ in "ab"]
    time.sleep(3)
    return f"{answers[-1]}; RSS 3 s later {server.rss_mb():.0f} MB"


def tf_serving(server: Server, body: bytes) -> tuple:
    name = server.bundle.name
    path = f"/v1/models/{name}:predict"
    return request(server.port, "POST", path, body, {"Content-Type": "application/json"}, 120)


def case_big_json(server: Server, hold: float) -> str:
    blob = base64.b64encode(os.urandom(14 * 2**20)).decode()
    body = json.dumps({"instances": [{"b64": blob}]}).encode()
    return concurrently(3, lambda: tf_serving(server, body))


def case_deep_json(server: Server, hold: float) -> str:
    return concurrently(1, lambda: tf_serving(server, b"[" * 5000))


def case_long_boundary(server: Server, hold: float) -> str:
    body, kind = multipart([("a.png", DEMO_IMAGE.read_bytes())], boundary="b" * 5000)
    return concurrently(
        1, lambda: request(server.port, "POST", "/predict", body, {"Content-Type": kind})
    )


def case_empty_fields(server: Server, hold: float) -> str:
    body, kind = empty_fields(370_000)
    return concurrently(
        1, lambda: request(server.port, "POST", "/predict", body, {"Content-Type": kind}, 120)
    )


SERVER_CASES = {
    "idle connections (1,100, none sends)": case_idle,
    "slow headers (200, 1 byte/s)": case_slow_headers,
    "slow bodies (20, 1 byte/s)": case_slow_bodies,
    "height bombs (3 x 1x80,000,000 PNG, 69 B)": case_height_bombs,
    "PNG with a short zlib stream": case_short_stream,
    "EPS named .png": case_eps,
    "foreign Host (DNS rebinding)": case_foreign_host,
    "foreign Origin POST": case_foreign_origin,
    "48 concurrent 19.5 MB uploads, twice": case_big_uploads,
    "3 concurrent 19 MB TF-Serving JSON": case_big_json,
    "JSON of 5,000 '['": case_deep_json,
    "5,000-character boundary": case_long_boundary,
    "370,000 empty multipart fields": case_empty_fields,
}


# --- the bundle cases (cnnclf predict on a tampered copy) ---------------------------------


def padded_config_bundle(bundle: Path, out: Path, pad_mb: int) -> Path:
    """A copy whose model.keras has `pad_mb` MB of spaces after its config.json's JSON."""
    shutil.copytree(bundle, out)
    source = bundle / "model.keras"
    with (
        zipfile.ZipFile(source) as zin,
        zipfile.ZipFile(out / "model.keras", "w", zipfile.ZIP_DEFLATED) as zout,
    ):
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                with zout.open(item.filename, "w", force_zip64=True) as member:
                    member.write(data)
                    block = b" " * 2**20
                    for _ in range(pad_mb):
                        member.write(block)
            else:
                zout.writestr(item, data)
    return out


def deep_classes_bundle(bundle: Path, out: Path) -> Path:
    shutil.copytree(bundle, out)
    (out / "class_indices.json").write_text("[" * 100_000)
    return out


def timed_predict(tree: Path, model: Path, image: Path, work: Path, timeout: float) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnclf.cli", "predict", "--model", str(model), str(image)],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # The child's high-water mark, read while it runs: its rusage would also count what this
    # process held when it forked (Linux carries that over exec).
    peak = 0.0
    reader = threading.Thread(target=lambda: setattr(process, "err", process.stderr.read()))
    reader.start()
    while process.poll() is None and time.perf_counter() - start < timeout:
        peak = max(peak, high_water_mb(process.pid))
        time.sleep(0.02)
    killed = process.poll() is None
    if killed:
        process.kill()
    process.wait()
    reader.join()
    seconds = time.perf_counter() - start
    stderr = getattr(process, "err", b"").decode("utf-8", "replace").strip()
    last = stderr.splitlines()[-1][:140] if stderr else ""
    note = " (killed at the time limit)" if killed else ""
    return f"rc {process.returncode}{note}, {seconds:.1f} s, peak {peak:.0f} MB; {last!r}"


def high_water_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# --- running it all -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_bundle(work: Path) -> Path:
    out = work / "demo"
    print(f"training the demo bundle into {out} ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "cnnclf.cli", "train", "--config", "configs/demo.yaml"]
        + ["--set", "train.epochs=2", "--out", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return out


def run_server_cases(tree: Path, bundle: Path, work: Path, cases, hold: float) -> list[dict]:
    rows = []
    server = Server(tree, bundle, work)
    server.start()
    idle = server.rss_mb()
    print(f"  {tree}: ready, idle RSS {idle:.0f} MB", flush=True)
    try:
        for name in cases:
            if not server.alive():
                server.start()
                idle = server.rss_mb()
            with Watch(server) as watch:
                try:
                    answer = SERVER_CASES[name](server, hold)
                except Exception as exc:  # the attack's own failure is a finding, not a crash
                    answer = f"client error {type(exc).__name__}: {exc}"
            slowest = max(watch.latencies, default=float("nan"))
            row = {
                "case": name,
                "answer": answer + ("" if server.alive() else "; SERVER DIED"),
                "idle_mb": round(idle),
                "peak_mb": round(watch.peak),
                "peak_x_idle": round(watch.peak / idle, 2) if idle else None,
                "slowest_normal_s": round(slowest, 2),
                "normal_failures": dict(watch.failures),
                "normal_requests": len(watch.latencies),
            }
            rows.append(row)
            print(f"    {name}: {row}", flush=True)
    finally:
        server.stop()
    return rows


def run_bundle_cases(tree: Path, bundle: Path, work: Path, pad_mb: int, timeout: float) -> list:
    bomb = padded_config_bundle(bundle, work / "bomb-config", pad_mb)
    deep = deep_classes_bundle(bundle, work / "deep-classes")
    tall = work / "tall.png"
    tall.write_bytes(height_bomb())
    rows = [
        {"case": f"model.keras config.json inflating to {pad_mb} MB", "model": bomb},
        {"case": "class_indices.json of 100,000 '['", "model": deep},
        {"case": "CLI predict of the height bomb", "model": bundle, "image": tall},
    ]
    for row in rows:
        image = row.pop("image", DEMO_IMAGE)
        row["answer"] = timed_predict(tree, row.pop("model"), image, work, timeout)
        print(f"    {row['case']}: {row['answer']}", flush=True)
    return rows


def markdown(results: dict) -> str:
    lines = [
        "| case | tree | answer | peak RSS MB (x idle) | slowest normal request s "
        "| normal failures |",
        "|---|---|---|---|---|---|",
    ]
    for tree, rows in results["server"].items():
        for row in rows:
            lines.append(
                f"| {row['case']} | {tree} | {row['answer']} | {row['peak_mb']} "
                f"({row['peak_x_idle']}x) | {row['slowest_normal_s']} | "
                f"{row['normal_failures'] or 0} |"
            )
    lines += ["", "| bundle case | tree | cnnclf predict |", "|---|---|---|"]
    for tree, rows in results["bundle"].items():
        lines += [f"| {row['case']} | {tree} | {row['answer']} |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="source tree of the code to compare with")
    parser.add_argument("--model", type=Path, help="bundle to serve (default: train the demo)")
    parser.add_argument("--hold", type=float, default=12.0, help="seconds per connection case")
    parser.add_argument("--cases", help="comma-separated substrings of case names to run")
    parser.add_argument("--pad-mb", type=int, default=300, help="config.json bomb size")
    parser.add_argument("--predict-timeout", type=float, default=180.0)
    parser.add_argument("--skip-bundles", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))

    work = Path(tempfile.mkdtemp(prefix="cnnclf-attack-"))
    bundle = args.model.resolve() if args.model else train_bundle(work)
    trees = {"after": REPO}
    if args.baseline:
        trees = {"before": args.baseline.resolve(), **trees}
    wanted = [s.strip() for s in (args.cases or "").split(",") if s.strip()]
    cases = [n for n in SERVER_CASES if not wanted or any(w in n for w in wanted)]
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "server": {}}
    results["bundle"] = {}
    for label, tree in trees.items():
        print(f"{label}: {tree}", flush=True)
        scratch = work / label
        scratch.mkdir()
        results["server"][label] = run_server_cases(tree, bundle, scratch, cases, args.hold)
        if not args.skip_bundles:
            results["bundle"][label] = run_bundle_cases(
                tree, bundle, scratch, args.pad_mb, args.predict_timeout
            )
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
