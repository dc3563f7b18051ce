"""Start `python app.py` as a Space would, on a free port of 127.0.0.1, and stop it."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, extra_env: dict | None = None, log=subprocess.DEVNULL, args: tuple = (),
              timeout: float = 120.0, root: Path = ROOT) -> tuple[subprocess.Popen, float]:
    """Start `python app.py` (in `root`: this repo, or a Space bundle) with its port in $PORT, as a Space starts
    it; returns (process, seconds until it answered HTTP 200 on /). CLIP is pointed at a missing file unless
    extra_env says otherwise."""
    env = {**os.environ, "PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "DIFFUSION_CLIP_PRETRAINED": "/nonexistent/clip.safetensors",
           **(extra_env or {})}
    env.pop("GRADIO_SERVER_PORT", None)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py", *args], cwd=root, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return process, time.perf_counter() - start
        except httpx.TransportError:
            pass
        if time.perf_counter() - start > timeout:
            stop(process)
            raise RuntimeError(f"app.py did not serve within {timeout:.0f} s")
        time.sleep(0.02)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Stop the app as a Space does (SIGTERM); returns its exit code."""
    process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
