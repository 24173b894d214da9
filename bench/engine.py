"""A private Docker engine for one benchmark run (``python -m bench --private-engine``).

On a machine where other work uses the Docker engine, that work's containers and events reach
the daemon under test (each event wakes it for a pass) and its load skews every figure. This
module starts a second ``dockerd`` of the same installation, with its own data root, exec root
(and so its own containerd), socket and no bridge network, loads the test image into it and points
``DOCKER_HOST`` at it for this process and every child (the daemon, ``ds01ctl``, the ``docker`` CLI).
It stops that engine and deletes its directory at the end. Needs root, like dockerd itself.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from bench.host import IMAGE

# `docker run --gpus` needs an nvidia prestart hook on dockerd's PATH; on a host without NVIDIA's
# toolkit a no-op one registers the device driver (as scripts/host-setup.sh does for the tests).
HOOK_NAME = "nvidia-container-runtime-hook"
HOOK_SCRIPT = "#!/bin/sh\ncat >/dev/null\nexit 0\n"
BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "sleep", "touch", "cat", "ls", "yes", "dd", "ps", "ln", "kill", "true", "echo")


class EngineError(RuntimeError):
    """The private engine could not be started or prepared."""


class PrivateEngine:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ds01-bench-engine-"))
        self.socket = self.root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.previous_docker_host = os.environ.get("DOCKER_HOST")
        self.bridge = f"ds01b{os.getpid() % 100000:05d}"  # our own bridge; at most 15 characters

    def start(self, timeout_s: float = 60.0) -> str:
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            subprocess.run(
                ["ip", "link", "add", "name", self.bridge, "type", "bridge"], check=True, timeout=10
            )
        dockerd = shutil.which("dockerd")
        runc = shutil.which("runc")
        if dockerd is None or runc is None:
            raise EngineError("dockerd and runc must be on PATH to start a private engine")
        hook_dir = self.root / "hook"
        hook_dir.mkdir()
        hook = hook_dir / HOOK_NAME
        hook.write_text(HOOK_SCRIPT)
        hook.chmod(0o755)
        env = dict(os.environ)
        env["PATH"] = f"{hook_dir}:{env.get('PATH', '')}"
        log = (self.root / "dockerd.log").open("wb")
        self.proc = subprocess.Popen(
            [
                dockerd,
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "docker.pid"),
                "--host",
                self.url,
                # Not "none": dockerd then deletes the host's docker0, breaking the main engine.
                "--bridge",
                self.bridge,
                "--iptables=false",
                "--ip-masq=false",
                "--add-runtime",
                f"nvidia={runc}",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal must not reach it before cleanup
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise EngineError(f"dockerd exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                docker.DockerClient(base_url=self.url, timeout=5).ping()
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise EngineError(
                        f"dockerd did not answer within {timeout_s:.0f} s: {self.log_tail()}"
                    ) from exc
                time.sleep(0.3)
        self._load_image()
        os.environ["DOCKER_HOST"] = self.url
        return self.url

    def log_tail(self) -> str:
        try:
            return (self.root / "dockerd.log").read_text(errors="replace")[-800:]
        except OSError:
            return "(no log)"

    def _load_image(self) -> None:
        """Copy the test image from the default engine, or build it from busybox-static."""
        private = docker.DockerClient(base_url=self.url, timeout=120)
        try:
            source = docker.DockerClient(
                base_url=self.previous_docker_host or "unix:///var/run/docker.sock", timeout=30
            )
            data = b"".join(source.api.get_image(IMAGE))
            private.images.load(data)
            return
        except Exception:
            pass  # the default engine is unreachable or lacks the image: build it
        if not BUSYBOX.is_file():
            raise EngineError(f"{IMAGE} is not on the default engine and {BUSYBOX} is missing to build it")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for d in ("bin", "workspace", "tmp", "proc", "sys", "dev", "etc"):
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            tar.add(str(BUSYBOX), arcname="bin/busybox")
            for applet in BUSYBOX_APPLETS:
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type = tarfile.SYMTYPE
                link.linkname = "busybox"
                tar.addfile(link)
        repository, tag = IMAGE.rsplit(":", 1)
        private.api.import_image_from_data(
            buf.getvalue(), repository=repository, tag=tag, changes=['CMD ["/bin/sh"]']
        )

    def stop(self) -> None:
        """Stop the engine (its containers with it) and delete its directory and bridge."""
        subprocess.run(["ip", "link", "delete", self.bridge], check=False, timeout=10, capture_output=True)
        if self.previous_docker_host is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = self.previous_docker_host
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        # dockerd unmounts its overlays on a clean exit; anything still mounted is left in place
        # rather than deleted through the mount.
        mounted = _mounts_under(self.root)
        if not mounted:
            shutil.rmtree(self.root, ignore_errors=True)


def _mounts_under(root: Path) -> list[str]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    prefix = str(root)
    return [parts[1] for line in lines if len(parts := line.split()) > 1 and parts[1].startswith(prefix)]
