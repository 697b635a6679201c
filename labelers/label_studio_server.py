"""A local Label Studio for users who have none: start it headless on loopback, stop it cleanly.

The server lives in its own virtual environment (.venv-labelstudio/, made by
scripts/install-label-studio.sh) because its pins clash with the project's. Credentials are made
once per data folder and kept there (mode 600): Label Studio applies the user and token only on
the first start, so a restart must reuse them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgedistill.errors import EdgedistillError

INSTALL_HINT = "run `bash scripts/install-label-studio.sh` (or `make label-studio`), or set LABEL_STUDIO_BIN"
CREDENTIALS_FILE = "edgedistill-credentials.json"
FIRST_START_TIMEOUT_S = 300.0  # the first start migrates a fresh SQLite database: 90-110 s on 2 cores


@dataclass
class LocalServer:
    url: str
    username: str
    password: str = field(repr=False)
    token: str = field(repr=False)
    data_dir: Path
    process: subprocess.Popen = field(repr=False)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the server's own process group, SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(grace_s)

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def label_studio_command() -> Path:
    """The `label-studio` executable of the project's separate virtual environment."""
    configured = os.environ.get("LABEL_STUDIO_BIN")
    candidates = [Path(configured)] if configured else []
    candidates.append(Path(__file__).resolve().parents[1] / ".venv-labelstudio" / "bin" / "label-studio")
    found = shutil.which("label-studio")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise EdgedistillError("the Label Studio server is not installed", INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def credentials(data_dir: Path, username: str | None = None) -> dict[str, str]:
    """The admin user, password and API token of this data folder: made once, then reused."""
    path = data_dir / CREDENTIALS_FILE
    if path.exists():
        return json.loads(path.read_text())
    made = {"username": username or "admin@localhost.local", "password": secrets.token_urlsafe(12),
            "token": secrets.token_hex(20)}
    data_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(made))
    return made


def start_label_studio(data_dir: Path, port: int | None = None, document_root: Path = Path("/"),
                       timeout_s: float = FIRST_START_TIMEOUT_S, log_path: Path | None = None) -> LocalServer:
    """Start Label Studio headless on 127.0.0.1 with SQLite in `data_dir`; return once it is up."""
    data_dir = data_dir.resolve()
    login = credentials(data_dir)
    port = port or free_port()
    env = server_environment(data_dir, document_root, login)
    log = open(log_path or data_dir / "label-studio.log", "ab")
    command = [str(label_studio_command()), "start", "--no-browser", "--internal-host", "127.0.0.1",
               "--port", str(port), "--username", login["username"], "--enable-legacy-api-token"]
    # its own session: stop() ends the server and the workers it forks, and nothing else
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               cwd=data_dir)
    log.close()
    server = LocalServer(url=f"http://127.0.0.1:{port}", username=login["username"], password=login["password"],
                         token=login["token"], data_dir=data_dir, process=process)
    try:
        wait_until_up(server, timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def server_environment(data_dir: Path, document_root: Path, login: dict[str, str]) -> dict[str, str]:
    """The environment Label Studio runs in: SQLite and media in `data_dir`, files served from under
    `document_root`, and nothing sent out: a private, offline tool reports no errors to Sentry (server and
    browser), sends no usage analytics and asks PyPI for no newer version. The LABEL_STUDIO_ prefix is the
    name Label Studio reads first, so a plain SENTRY_DSN elsewhere in the environment cannot turn them on."""
    return os.environ | {
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root.resolve()),
        # read like --password / --user-token, but kept out of the process list (`ps`)
        "LABEL_STUDIO_PASSWORD": login["password"],
        "LABEL_STUDIO_USER_TOKEN": login["token"],
        "LABEL_STUDIO_SENTRY_DSN": "",
        "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
    }


def wait_until_up(server: LocalServer, timeout_s: float) -> None:
    """Poll GET /health until {"status": "UP"}; fail early if the process dies."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise EdgedistillError(f"Label Studio exited with code {server.process.returncode} while starting",
                                   f"see {server.data_dir / 'label-studio.log'}; is port {server.url} taken?")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).json().get("status") == "UP":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1.0)
    raise EdgedistillError(f"Label Studio did not come up within {timeout_s:.0f} s",
                           f"see {server.data_dir / 'label-studio.log'}")
