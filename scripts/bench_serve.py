"""Load benchmark of `cnnclf serve` on 127.0.0.1, side by side with `cnnclf predict`.

    python scripts/bench_serve.py                        # trains the demo bundle first (~30 s)
    python scripts/bench_serve.py --model runs/demo-...  --json bench-serve.json

Measures, in one run on this machine:
- single-image latency over sequential requests (p50, p99), one keep-alive connection;
- throughput and p99 latency with 1, 8 and 32 concurrent clients (threads, each with its own
  keep-alive connection), each level bounded by --seconds and --max-requests;
- `cnnclf predict` on one image and on the demo test folder (a fresh process each, as a user
  runs it);
- the server's RSS, sampled every 0.25 s through the whole run (it must stay flat);
- errors (any non-200 answer or failed connection): must be 0, else the script exits 1.

The clients run on the same cores as the server: on a small machine the figures are lower
bounds for the server, and only ratios between them mean much. Loopback only; bounded in
requests and time (about a minute with the defaults, plus training).
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_TEST = REPO / "data" / "demo" / "test_set"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{path.name}"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()
    return (
        body + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


class Client:
    """One keep-alive connection posting images to /predict; records latencies and errors."""

    def __init__(self, port: int, bodies: list[tuple[bytes, str]]):
        self.port, self.bodies = port, bodies
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def post(self, i: int) -> None:
        body, content_type = self.bodies[i % len(self.bodies)]
        start = time.perf_counter()
        try:
            self.connection.request(
                "POST", "/predict", body=body, headers={"Content-Type": content_type}
            )
            response = self.connection.getresponse()
            data = response.read()
            if response.status != 200 or b'"label"' not in data:
                self.errors.append(f"{response.status} {data[:200]!r}")
        except (OSError, http.client.HTTPException) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        self.latencies.append(time.perf_counter() - start)


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.stop = pid, every, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
                kb = int(
                    next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[
                        1
                    ]
                )
                self.samples.append((time.monotonic(), kb / 1024))
            except (OSError, StopIteration):
                pass
            self.stop.wait(self.every)

    def mark(self) -> float:
        return self.samples[-1][1] if self.samples else float("nan")


def sequential(port, bodies, n) -> dict:
    client = Client(port, bodies)
    start = time.perf_counter()
    for i in range(n):
        client.post(i)
    elapsed = time.perf_counter() - start
    ms = [1000 * v for v in client.latencies]
    return {
        "requests": n,
        "errors": len(client.errors),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.mean(ms),
        "img_per_s": n / elapsed,
        "first_errors": client.errors[:3],
    }


def concurrent(port, bodies, clients, seconds, max_requests) -> dict:
    workers = [Client(port, bodies) for _ in range(clients)]
    issued = iter(range(max_requests))
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def work(client):
        while time.perf_counter() < deadline:
            with lock:
                i = next(issued, None)
            if i is None:
                return
            client.post(i)

    threads = [threading.Thread(target=work, args=(c,)) for c in workers]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = [1000 * v for c in workers for v in c.latencies]
    errors = [e for c in workers for e in c.errors]
    return {
        "clients": clients,
        "requests": len(ms),
        "seconds": elapsed,
        "img_per_s": len(ms) / elapsed,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr}")
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="bundle to serve (default: train configs/demo.yaml)")
    parser.add_argument("--sequential", type=int, default=300, help="sequential requests")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels")
    parser.add_argument("--seconds", type=float, default=10.0, help="time cap per level")
    parser.add_argument("--max-requests", type=int, default=3000, help="request cap per level")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    cnnclf = [sys.executable, "-m", "cnnclf.cli"]

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = args.model
    if model is None:
        model = str(work / "demo")
        print(f"training the demo bundle into {model} ...", flush=True)
        seconds = timed(cnnclf + ["train", "--config", "configs/demo.yaml", "--out", model])
        print(f"  {seconds:.1f} s", flush=True)
    images = sorted(p for p in DEMO_TEST.rglob("*.png"))
    bodies = [multipart(p) for p in images]

    port = free_port()
    start = time.perf_counter()
    server = subprocess.Popen(
        cnnclf
        + [
            "serve",
            "--model",
            model,
            "--port",
            str(port),
            "--max-batch-size",
            str(args.max_batch_size),
            "--max-wait-ms",
            str(args.max_wait_ms),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    rss = RssSampler(server.pid)
    rss.start()
    measured_from = float("inf")
    results: dict = {"model": model, "images": len(images)}
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.perf_counter() - start > 180:
                raise SystemExit(f"the server did not become ready:\n{server.stderr.read()}")
            time.sleep(0.1)
        results["server_ready_s"] = time.perf_counter() - start
        results["rss_mb"] = {"ready": rss.mark()}
        sequential(port, bodies, 20)  # connection and allocator warm-up, not measured
        results["rss_mb"]["warm"] = rss.mark()
        measured_from = time.monotonic()
        results["sequential"] = sequential(port, bodies, args.sequential)
        results["rss_mb"]["after_sequential"] = rss.mark()
        results["concurrent"] = []
        for clients in (int(c) for c in args.clients.split(",")):
            results["concurrent"].append(
                concurrent(port, bodies, clients, args.seconds, args.max_requests)
            )
            results["rss_mb"][f"after_{clients}_clients"] = rss.mark()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        rss.stop.set()
    results["server_exit_code"] = server.returncode
    values = [mb for t, mb in rss.samples if t >= measured_from]
    results["rss_mb"].update(
        min_measured=min(values), max_measured=max(values), samples=len(values)
    )

    one = images[len(images) // 2]
    results["cli_one_image_s"] = timed(cnnclf + ["predict", "--model", model, str(one)])
    folder_s = timed(cnnclf + ["predict", "--model", model, str(DEMO_TEST)])
    results["cli_folder"] = {
        "images": len(images),
        "seconds": folder_s,
        "img_per_s": len(images) / folder_s,
    }

    seq = results["sequential"]
    print(f"\nserver ready in {results['server_ready_s']:.1f} s (import, load, warm-up)")
    print(
        f"sequential, {seq['requests']} requests: p50 {seq['p50_ms']:.1f} ms, p99 "
        f"{seq['p99_ms']:.1f} ms ({seq['img_per_s']:.0f} img/s), errors {seq['errors']}"
    )
    print(f"{'clients':>8} {'requests':>9} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for row in results["concurrent"]:
        print(
            f"{row['clients']:>8} {row['requests']:>9} {row['img_per_s']:>8.0f} "
            f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['errors']:>7}"
        )
    folder = results["cli_folder"]
    print(
        f"cnnclf predict, one image: {results['cli_one_image_s']:.2f} s "
        f"(= {1000 * results['cli_one_image_s'] / seq['p50_ms']:.0f}x the served p50)"
    )
    print(
        f"cnnclf predict, folder of {folder['images']}: {folder['seconds']:.2f} s "
        f"({folder['img_per_s']:.0f} img/s, start-up included)"
    )
    best = max(results["concurrent"], key=lambda r: r["img_per_s"])
    print(
        f"best served throughput ({best['clients']} clients) = "
        f"{best['img_per_s'] / folder['img_per_s']:.2f}x the folder predict's img/s"
    )
    r = results["rss_mb"]
    print(
        "server RSS MB: "
        + ", ".join(f"{k} {v:.0f}" for k, v in r.items() if k != "samples")
        + f" ({r['samples']} samples)"
    )
    print(f"server exit code after SIGTERM: {results['server_exit_code']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    errors = seq["errors"] + sum(row["errors"] for row in results["concurrent"])
    if errors or results["server_exit_code"] != 0:
        first = seq["first_errors"] + [e for r in results["concurrent"] for e in r["first_errors"]]
        print(f"FAILED: {errors} error(s); first: {first[:3]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
