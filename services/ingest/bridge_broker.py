"""A local Mosquitto broker for tests and the demo: Debian's package, a generated config, a private port.

    with Mosquitto(port=28883, folder=state_dir / "mosquitto") as broker:
        ...  # broker.url == "mqtt://127.0.0.1:28883"

`mosquitto_binary()` installs Debian's `mosquitto` with apt-get when it is missing (as root, the
way the project's machines and CI run), so a fresh machine needs nothing by hand.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next((p for p in _CANDIDATES if Path(p).exists()), None)
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mosquitto"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"could not install Debian's mosquitto: {result.stderr[-2000:]}")
    found = shutil.which("mosquitto") or next((p for p in _CANDIDATES if Path(p).exists()), None)
    if not found:
        raise RuntimeError("mosquitto was installed but is not on PATH nor in /usr/sbin")
    return found


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Mosquitto:
    """A broker on 127.0.0.1:`port`, anonymous, in memory, keeping up to `max_queued` messages per
    absent client; started on enter (or `start()`), stopped on exit (or `stop()`)."""

    def __init__(self, port: int, folder: Path, *, max_queued: int = 100_000) -> None:
        self.port = port
        self.folder = Path(folder)
        self.max_queued = max_queued
        self.url = f"mqtt://127.0.0.1:{port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        binary = mosquitto_binary()
        if _port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken: choose another port for Mosquitto")
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / "mosquitto.log"
        conf = self.folder / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        f"max_queued_messages {self.max_queued}\nlog_dest file {log}\n"
                        "log_type error\nlog_type warning\n")
        self._process = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not _port_open(self.port):
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {log.read_text() if log.exists() else ''}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s:g} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
