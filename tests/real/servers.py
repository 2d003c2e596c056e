"""Real proxy and gateway programs (squid, nginx, tinyproxy) on loopback, for the tests in tests/real.

Each server writes its config into its own temporary folder, starts the Debian-packaged binary in
the foreground on 127.0.0.1 with a free port, waits until the port accepts connections and is
stopped (and its folder removed) by `Servers.close()`, which the tests' fixture calls even on
failure. A missing binary FAILS the test with the apt package to install: these tests never skip.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

SQUID = "/usr/sbin/squid"
SQUID_BASIC_AUTH = "/usr/lib/squid/basic_ncsa_auth"
NGINX = "/usr/sbin/nginx"
TINYPROXY = "/usr/bin/tinyproxy"
REDIS = "/usr/bin/redis-server"
CHROMIUM = "/usr/bin/chromium"  # the health report's browser test

# Binary -> the Debian 12 package that ships it.
PACKAGES = {
    SQUID: "squid",
    SQUID_BASIC_AUTH: "squid",
    NGINX: "nginx",
    TINYPROXY: "tinyproxy",
    REDIS: "redis-server",
    CHROMIUM: "chromium",
}

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
_BIND_ERRORS = ("Address already in use", "cannot bind", "bind()", "Could not create listening socket")


def require_binary(path: str) -> None:
    """Fail (never skip) when a program the tests drive is not installed."""
    if not os.access(path, os.X_OK):
        package = PACKAGES.get(path, "?")
        pytest.fail(
            f"{path} is not installed: these tests need the Debian package {package!r} "
            f"(apt-get install -y {package}; .ci/run installs it)",
            pytrace=False,
        )


def free_port() -> int:
    """A port nobody listens on right now (the caller retries if it loses a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def accepts(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# -- htpasswd without the crypt module (gone in Python 3.13) -------------------------------------

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def apr1(password: str, salt: str | None = None) -> str:
    """Apache's MD5-crypt (`$apr1$`), as `openssl passwd -apr1` and squid's basic_ncsa_auth know it."""
    salt = (salt or "".join(secrets.choice(_ITOA64) for _ in range(8)))[:8]
    pw, s, magic = password.encode(), salt.encode(), b"$apr1$"
    ctx = hashlib.md5(pw + magic + s)
    alt = hashlib.md5(pw + s + pw).digest()
    for left in range(len(pw), 0, -16):
        ctx.update(alt[: min(16, left)])
    bits = len(pw)
    while bits:
        ctx.update(b"\0" if bits & 1 else pw[:1])
        bits >>= 1
    final = ctx.digest()
    for i in range(1000):
        step = hashlib.md5(pw if i & 1 else final)
        if i % 3:
            step.update(s)
        if i % 7:
            step.update(pw)
        step.update(final if i & 1 else pw)
        final = step.digest()

    def to64(value: int, count: int) -> str:
        out = ""
        for _ in range(count):
            out += _ITOA64[value & 0x3F]
            value >>= 6
        return out

    encoded = "".join(
        to64(final[a] << 16 | final[b] << 8 | final[c], 4)
        for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5))
    )
    encoded += to64(final[11], 2)
    return f"$apr1${salt}${encoded}"


# -- one running program ----------------------------------------------------------------------------


class RealServer:
    """One real program on 127.0.0.1:port, configured from a temp folder."""

    binary = ""
    label = "server"

    def __init__(self) -> None:
        require_binary(self.binary)
        self.folder = Path(tempfile.mkdtemp(prefix=f"gw-{self.label}-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = self.folder / "output.log"

    # Subclasses: the config text for a port, and the command line.
    def config(self, port: int) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Hook run once before the first start (permissions, password files)."""

    @property
    def config_path(self) -> Path:
        return self.folder / f"{self.label}.conf"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, port: int | None = None) -> Self:
        """Start on a free port, or on `port` (a restart where clients already know the address)."""
        self.prepare()
        problems = []
        wanted = port
        for _attempt in range(3 if wanted is None else 1):
            port = wanted or free_port()
            self.config_path.write_text(self.config(port))
            self.config_path.chmod(0o644)
            with self.output.open("ab") as out:
                self.proc = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.folder,
                    start_new_session=True,  # its helpers and workers share its process group
                )
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if accepts(port):
                    self.port = port
                    return self
                time.sleep(0.05)
            logs = self.logs()
            self._halt()
            problems.append(f"port {port}: exit {self.proc.returncode}\n{logs[-3000:]}")
            if not any(marker in logs for marker in _BIND_ERRORS):
                break  # not a lost race for the port: retrying will not help
        raise AssertionError(f"{self.label} did not start:\n" + "\n---\n".join(problems))

    def logs(self) -> str:
        """Everything the program wrote (its output and log files), for failure messages."""
        parts = []
        for path in sorted(self.folder.glob("*.log")):
            with contextlib.suppress(OSError):
                parts.append(f"== {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def kill(self) -> None:
        """SIGKILL the main process only, as a crash would (nothing is flushed or closed cleanly)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _halt(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        # Whatever it started (auth helpers, nginx workers) is in its own process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        self._halt()

    def cleanup(self) -> None:
        try:
            self._halt()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _as_root() -> bool:
    return os.geteuid() == 0


def _give_to(folder: Path, user: str) -> None:
    """Let the unprivileged user a root-started server switches to write its logs here."""
    if not _as_root():
        return
    entry = pwd.getpwnam(user)
    for path in [folder, *folder.iterdir()]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    folder.chmod(0o755)


# -- squid -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SquidLogLine:
    method: str
    url: str
    status: int
    user: str  # the authenticated user, "-" when none
    proxy_authorization_user: str | None  # the user named by the Proxy-Authorization we received
    squid_status: str


def _basic_user(header: str) -> str | None:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(token).decode("utf-8", "replace").partition(":")[0]
    except ValueError:
        return None


class Squid(RealServer):
    """squid 5 as a forward proxy (plain HTTP and CONNECT to any port), no cache.

    `users`: basic auth required, with these (user, password) pairs. `deny_hosts`: destination IPs
    answered with squid's own 403 ERR_ACCESS_DENIED.
    """

    binary = SQUID
    label = "squid"

    def __init__(self, *, users: Iterable[tuple[str, str]] = (), deny_hosts: Sequence[str] = ()) -> None:
        self.users = list(users)
        if self.users:
            require_binary(SQUID_BASIC_AUTH)
        super().__init__()
        # Its own service name keeps instances apart: squid names its shared memory after it.
        self.service = f"gw{os.getpid()}x{secrets.token_hex(4)}"
        self.deny_hosts = list(deny_hosts)

    def proxy_url(self, user: str | None = None, password: str | None = None) -> str:
        if user is None:
            return self.url
        return f"http://{user}:{password}@{HOST}:{self.port}"

    def prepare(self) -> None:
        if self.users:
            passwd = self.folder / "passwd"
            passwd.write_text("".join(f"{user}:{apr1(password)}\n" for user, password in self.users))
            passwd.chmod(0o644)
        _give_to(self.folder, "proxy")

    def config(self, port: int) -> str:
        d = self.folder
        lines = [
            f"http_port {HOST}:{port}",
            f"pid_filename {d}/squid.pid",
            f"cache_log {d}/cache.log",
            f"coredump_dir {d}",
            # The user (from auth) and the user of the raw Proxy-Authorization, whatever squid made of it.
            'logformat gw %ts.%03tu %>Hs %Ss %un %rm %ru "%{Proxy-Authorization}>h"',
            f"access_log stdio:{d}/access.log gw",
            "cache deny all",
            "cache_mem 8 MB",
            "shutdown_lifetime 0 seconds",
            "pinger_enable off",
            "visible_hostname gateway-test-squid",
            "connect_timeout 2 seconds",
            "read_timeout 10 seconds",
        ]
        if _as_root():
            lines.append("cache_effective_user proxy")
        for i, host in enumerate(self.deny_hosts):
            lines += [f"acl denied{i} dst {host}", f"http_access deny denied{i}"]
        if self.users:
            lines += [
                f"auth_param basic program {SQUID_BASIC_AUTH} {d}/passwd",
                "auth_param basic children 3",
                "auth_param basic realm gateway-test",
                "acl authenticated proxy_auth REQUIRED",
                "http_access allow authenticated",
                "http_access deny all",
            ]
        else:
            lines.append("http_access allow all")
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        # -N: in the foreground, without kid processes.
        return [SQUID, "-N", "-n", self.service, "-f", str(self.config_path)]

    def _halt(self) -> None:
        # A clean squid shutdown takes 1-2 s even with shutdown_lifetime 0; nothing is needed from it
        # (its access log is written as it goes), so kill it and remove the shared memory it leaves.
        self.kill()
        super()._halt()
        for segment in Path("/dev/shm").glob(f"{self.service}-*"):
            segment.unlink(missing_ok=True)

    def access_log(self) -> list[SquidLogLine]:
        """The requests squid logged (connections closed before any request are left out)."""
        entries: list[SquidLogLine] = []
        path = self.folder / "access.log"
        if not path.exists():
            return entries
        for raw in path.read_text(errors="replace").splitlines():
            head, _, quoted = raw.partition(' "')
            fields = head.split()
            if len(fields) < 6 or fields[4] in ("NONE", "-") or fields[5].startswith("error:"):
                continue
            header = quoted.rstrip('"')
            entries.append(
                SquidLogLine(
                    method=fields[4],
                    url=fields[5],
                    status=int(fields[1]) if fields[1].isdigit() else 0,
                    user=fields[3],
                    proxy_authorization_user=None if header in ("", "-") else _basic_user(header),
                    squid_status=fields[2],
                )
            )
        return entries


# -- nginx -------------------------------------------------------------------------------------------


class Nginx(RealServer):
    """nginx as a reverse proxy in front of one upstream `host:port`."""

    binary = NGINX
    label = "nginx"

    def __init__(self, upstream: str, *, read_timeout: float = 1.0, connect_timeout: float = 1.0) -> None:
        super().__init__()
        self.upstream = upstream
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout

    def prepare(self) -> None:
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.folder / sub).mkdir(exist_ok=True)
        _give_to(self.folder, "nobody")

    def config(self, port: int) -> str:
        d = self.folder
        # A single server in proxy_pass is never marked unavailable: nginx tries it on every request.
        return f"""
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {HOST}:{port};
        location / {{
            proxy_pass http://{self.upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout {round(self.connect_timeout * 1000)}ms;
            proxy_read_timeout {round(self.read_timeout * 1000)}ms;
            proxy_next_upstream off;
        }}
    }}
}}
"""

    def command(self) -> list[str]:
        return [NGINX, "-p", str(self.folder), "-e", str(self.folder / "error.log"), "-c", str(self.config_path)]

    def url_for(self, path: str) -> str:
        return f"{self.url}{path}"

    def statuses(self) -> dict[int, int]:
        """Count of each status nginx answered, from its access log (combined format)."""
        counts: dict[int, int] = {}
        path = self.folder / "access.log"
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                _, _, rest = line.partition('" ')
                status = rest.split(" ", 1)[0]
                if status.isdigit():
                    counts[int(status)] = counts.get(int(status), 0) + 1
        return counts


# -- tinyproxy ---------------------------------------------------------------------------------------


class Tinyproxy(RealServer):
    """tinyproxy as a forward proxy (plain HTTP and CONNECT to any port), localhost only."""

    binary = TINYPROXY
    label = "tinyproxy"

    def prepare(self) -> None:
        (self.folder / "tinyproxy.log").touch()
        _give_to(self.folder, "nobody")

    def config(self, port: int) -> str:
        d = self.folder
        lines = [
            f"Port {port}",
            f"Listen {HOST}",
            "Timeout 10",
            f'LogFile "{d}/tinyproxy.log"',
            "LogLevel Connect",
            f'PidFile "{d}/tinyproxy.pid"',
            "MaxClients 200",
            f"Allow {HOST}",
            # No ConnectPort line: CONNECT is allowed to every port.
        ]
        if _as_root():
            lines += ["User nobody", "Group nogroup"]
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        return [TINYPROXY, "-d", "-c", str(self.config_path)]

    def requests(self) -> list[str]:
        """The request lines tinyproxy logged ("GET http://..." or "CONNECT host:port")."""
        path = self.folder / "tinyproxy.log"
        if not path.exists():
            return []
        marker = "]: Request (file descriptor "
        return [
            line.split("): ", 1)[1].removesuffix(" HTTP/1.1").removesuffix(" HTTP/1.0")
            for line in path.read_text(errors="replace").splitlines()
            if marker in line and "): " in line
        ]


# -- the tests' handle: starts servers and stops every one of them ------------------------------------


# -- redis -------------------------------------------------------------------------------------------


class Redis(RealServer):
    """redis-server in the foreground, in memory only (no RDB, no AOF), on 127.0.0.1."""

    binary = REDIS
    label = "redis"

    def config(self, port: int) -> str:
        return f"""
bind {HOST}
port {port}
protected-mode yes
save ""
appendonly no
dir {self.folder}
logfile {self.folder}/redis.log
"""

    def command(self) -> list[str]:
        return [REDIS, str(self.config_path)]

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def restart(self) -> None:
        """Start again on the same port, after stop() or kill()."""
        self.start(self.port)


class Servers:
    """Starts real servers for one test; close() stops them all and removes their folders."""

    def __init__(self) -> None:
        self.started: list[RealServer] = []

    def _start(self, server: RealServer) -> RealServer:
        self.started.append(server)  # registered first: cleaned up even if start() fails
        server.start()
        return server

    def squid(self, *, users: Iterable[tuple[str, str]] = (), deny_hosts: Sequence[str] = ()) -> Squid:
        server = Squid(users=users, deny_hosts=deny_hosts)
        self._start(server)
        return server

    def nginx(self, upstream: str, **kwargs: float) -> Nginx:
        server = Nginx(upstream, **kwargs)
        self._start(server)
        return server

    def tinyproxy(self) -> Tinyproxy:
        server = Tinyproxy()
        self._start(server)
        return server

    def redis(self) -> Redis:
        server = Redis()
        self._start(server)
        return server

    def close(self) -> None:
        errors = []
        for server in reversed(self.started):
            try:
                server.cleanup()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{server.label}: {exc!r}")
        self.started.clear()
        if errors:
            raise RuntimeError("could not stop: " + "; ".join(errors))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
