"""Run the nginx files of deploy/nginx for real: render them into a test prefix, check, start.

The deploy files are `include`d from `http {}` in production (conf.d/ plus snippets/). A test
wraps the site file in a minimal main config whose paths all live in a private prefix, and
replaces the production addresses (unix socket, `listen 80`) with loopback ones.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tests.support.processes import ROOT, free_port, port_is_free, terminate, wait_until

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DEPLOY_NGINX = ROOT / "deploy" / "nginx"
SNIPPET = "l104-proxy-params.conf"
NODE_SOCKET = "unix:/run/l104-node/gunicorn.sock"
LISTEN = "listen 80;"

# The main config a test instance runs with. `proxy_ignore_headers X-Accel-Buffering` makes
# nginx ignore the node's own "do not buffer" header, so streaming tests prove that the deploy
# config alone streams.
MAIN_CONF = """\
daemon off;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    log_format l104_test '$request_id $status upstream=$upstream_status "$request"';
    access_log {prefix}/logs/access.log l104_test;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    proxy_ignore_headers X-Accel-Buffering;
    gzip on;
    gzip_types application/json text/event-stream;
    include {prefix}/conf.d/{site};
}}
"""


# --- a small parser, to assert on the structure of the deploy files --------------------------


@dataclass
class Directive:
    """One nginx directive: its name, arguments and, for a block, the directives inside."""

    name: str
    args: list[str]
    block: list[Directive] | None = None

    def find(self, name: str) -> list[Directive]:
        """The directives called `name` directly inside this block."""
        return [d for d in self.block or [] if d.name == name]

    def value(self, name: str) -> list[str]:
        """The arguments of the one directive `name` directly inside this block."""
        (found,) = self.find(name)
        return found.args


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif char in "{};":
            tokens.append(char)
            i += 1
        elif char in "\"'":
            end = text.index(char, i + 1)
            tokens.append(text[i + 1 : end])
            i = end + 1
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in "{};":
                i += 1
            tokens.append(text[start:i])
    return tokens


def parse(text: str) -> Directive:
    """The directives of an nginx config file, as the block of a root directive."""
    root = Directive("root", [], [])
    stack = [root]
    words: list[str] = []
    for token in _tokens(text):
        if token in (";", "{"):
            if not words:
                raise ValueError(f"nginx config: {token!r} without a directive")
            directive = Directive(words[0], words[1:], [] if token == "{" else None)
            assert stack[-1].block is not None
            stack[-1].block.append(directive)
            if token == "{":
                stack.append(directive)
            words = []
        elif token == "}":
            if words or len(stack) == 1:
                raise ValueError("nginx config: unbalanced '}'")
            stack.pop()
        else:
            words.append(token)
    if words or len(stack) != 1:
        raise ValueError("nginx config: unterminated directive or block")
    return root


def load(name: str) -> Directive:
    """The parsed deploy/nginx file `name`."""
    return parse((DEPLOY_NGINX / name).read_text())


# --- rendering and running -------------------------------------------------------------------


def render(text: str, replacements: Mapping[str, str]) -> str:
    """`text` with each key replaced by its value; every key must occur exactly once, so a
    changed deploy file fails the test loudly instead of running with production addresses."""
    for old, new in replacements.items():
        count = text.count(old)
        if count != 1:
            raise AssertionError(f"expected {old!r} once in the nginx config, found it {count}x")
        text = text.replace(old, new)
    return text


@dataclass
class NginxPrefix:
    """A private nginx prefix holding a rendered config, its logs and its temp folders."""

    path: Path
    port: int
    temp: Path

    @property
    def conf(self) -> Path:
        """The main config file."""
        return self.path / "nginx.conf"

    @property
    def error_log(self) -> Path:
        """nginx's error log."""
        return self.path / "logs" / "error.log"

    @property
    def access_log(self) -> Path:
        """The access log: `$request_id $status upstream=$upstream_status "$request"`."""
        return self.path / "logs" / "access.log"

    def args(self) -> list[str]:
        """The command-line options that select this prefix and config."""
        return [NGINX, "-p", str(self.path), "-c", str(self.conf), "-e", str(self.error_log)]

    def cleanup(self) -> None:
        """Remove the temp folders (the prefix with its logs stays, for post-mortems)."""
        shutil.rmtree(self.temp, ignore_errors=True)


def prepare(prefix: Path, site: str, upstreams: Mapping[str, str]) -> NginxPrefix:
    """Lay out `prefix` with deploy/nginx/`site` (its `upstreams` replaced, listening on a free
    loopback port) and the shared snippet, wrapped in MAIN_CONF."""
    port = free_port()
    # nginx started as root runs its workers as `nobody`, who must reach the temp folders;
    # pytest's own temp folders are private to their owner.
    temp = Path(tempfile.mkdtemp(prefix="l104-nginx-temp-"))
    temp.chmod(0o755)
    for folder in ("conf.d", "snippets", "logs"):
        (prefix / folder).mkdir(parents=True, exist_ok=True)
    site_text = render(
        (DEPLOY_NGINX / site).read_text(),
        {**upstreams, LISTEN: f"listen 127.0.0.1:{port};"},
    )
    (prefix / "conf.d" / site).write_text(site_text)
    shutil.copyfile(DEPLOY_NGINX / SNIPPET, prefix / "snippets" / SNIPPET)
    (prefix / "nginx.conf").write_text(MAIN_CONF.format(prefix=prefix, temp=temp, site=site))
    return NginxPrefix(prefix, port, temp)


def check(prefix: NginxPrefix) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the prefix's config."""
    return subprocess.run(
        [*prefix.args(), "-t"], capture_output=True, text=True, timeout=30, check=False
    )


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Nginx:
    """A running nginx (in the foreground, `daemon off`) with its prefix."""

    process: subprocess.Popen[bytes]
    prefix: NginxPrefix
    log_file: BinaryIO
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.prefix.port}"

    @property
    def port(self) -> int:
        """The loopback port nginx listens on."""
        return self.prefix.port

    def error_log(self) -> str:
        """nginx's error log so far."""
        return self.prefix.error_log.read_text(errors="replace")

    def access_log(self) -> str:
        """nginx's access log so far."""
        return self.prefix.access_log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> None:
        """Graceful stop (SIGQUIT: finish open requests), wait, then free the port."""
        terminate(self.process, signal.SIGQUIT, timeout)
        self.log_file.close()
        self.prefix.cleanup()
        wait_until(lambda: port_is_free(self.port), 30, f"nginx port {self.port} to be free")


def start(prefix: NginxPrefix) -> Nginx:
    """Check the config with `nginx -t`, then run nginx until it accepts connections."""
    checked = check(prefix)
    if checked.returncode != 0:
        prefix.cleanup()
        raise AssertionError(f"nginx -t failed:\n{checked.stderr}")
    log = (prefix.path / "logs" / "nginx.out").open("wb")
    process = subprocess.Popen(prefix.args(), stdout=log, stderr=subprocess.STDOUT)
    nginx = Nginx(process, prefix, log)
    try:
        wait_until(
            lambda: process.poll() is not None or _accepts(prefix.port), 15, "nginx to listen"
        )
    except AssertionError:
        nginx.stop()
        raise
    if process.poll() is not None:
        nginx.stop()
        raise AssertionError(f"nginx exited {process.returncode}:\n{nginx.error_log()}")
    return nginx


def start_in_front_of(prefix_dir: Path, upstream_url: str) -> Nginx:
    """deploy/nginx/l104-node.conf in front of the node at `upstream_url` (http://host:port)."""
    address = upstream_url.removeprefix("http://")
    return start(prepare(prefix_dir, "l104-node.conf", {NODE_SOCKET: address}))
