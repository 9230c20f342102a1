"""`python app.py` in a subprocess, spoken to over raw HTTP as an anonymous client would (no gradio_client):
upload a file, call an endpoint, read its answer; the process's memory (peak resident set since a reset)
and its log. Used by the security and load tests and by tests/loadtest.py. Loopback only."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """app.py running on 127.0.0.1 with its caches under `workdir`; `env` adds or overrides variables."""

    def __init__(self, workdir: Path, env: dict | None = None, start_timeout: float = 180, script: str = "app.py",
                 seed: Path | None = None):
        """seed: a cache folder copied into RNNHA_CACHE before the first start (conftest's gallery_cache)."""
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / f"app-{self.port}.log"
        self.env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port),
                    "RNNHA_CACHE": str(self.workdir / "cache"), "GRADIO_TEMP_DIR": str(self.workdir / "gradio"),
                    "MPLCONFIGDIR": str(self.workdir / "mpl"), "GRADIO_ANALYTICS_ENABLED": "False",
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        if seed is not None:
            import shutil

            shutil.copytree(seed, self.env["RNNHA_CACHE"], dirs_exist_ok=True)
        self.start_timeout = start_timeout
        self.script = script
        self.proc: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=self.url, timeout=300)

    def start(self) -> "Served":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen([sys.executable, self.script], cwd=REPO, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + self.start_timeout
        while True:
            try:
                if self.http.get("/config", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if time.time() > deadline:
                raise RuntimeError(f"app.py did not start within {self.start_timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._log.close()

    def __enter__(self) -> "Served":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    # --- the HTTP API ----------------------------------------------------------------------------

    def upload(self, data: bytes | Path, name: str | None = None) -> dict:
        """POST /gradio_api/upload -> a FileData payload for an image or file input."""
        if isinstance(data, Path):
            name, data = name or data.name, data.read_bytes()
        response = self.http.post("/gradio_api/upload", files=[("files", (name or "upload.bin", data))])
        if response.status_code != 200:
            raise UploadRefused(response.status_code, response.text)
        path = response.json()[0]
        return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def call(self, api_name: str, *data, session: str | None = None) -> tuple[str, object]:
        """POST /gradio_api/call/<name>, then read its event stream: ("complete", outputs) or
        ("error", message)."""
        body = {"data": list(data), "session_hash": session or uuid.uuid4().hex[:12]}
        response = self.http.post(f"/gradio_api/call/{api_name}", content=json.dumps(body),  # NaN allowed
                                  headers={"content-type": "application/json"})
        if response.status_code != 200:
            return "http", (response.status_code, response.text)
        event_id = response.json()["event_id"]
        event, payload = None, None
        with self.http.stream("GET", f"/gradio_api/call/{api_name}/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    payload = json.loads(line.split(":", 1)[1].strip() or "null")
                    break
        return event, payload

    # --- memory ----------------------------------------------------------------------------------

    def reset_peak(self) -> int:
        """Reset the process's peak resident set (Linux clear_refs); returns the current RSS in bytes."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        return self._status("VmRSS")

    def peak(self) -> int:
        return self._status("VmHWM")

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)


class UploadRefused(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(f"{status}: {text[:200]}")
        self.status, self.text = status, text
