"""The deployment files in deploy/: systemd unit, supervisord program, nginx configs.

Each is checked by the tool that runs it where one is installed (systemd-analyze, nginx -t),
and its settings are checked against the node's own defaults (timeouts, body size, paths).
"""

from __future__ import annotations

import configparser
import getpass
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from app.settings import Settings, env_vars
from app.workers import fd_limits
from tests.support import nginx
from tests.support.processes import ROOT

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "l104-node.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "l104-node.env.example"
SUPERVISOR = DEPLOY / "supervisor" / "l104-node.conf"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
INSTALL_DIR = "/opt/l104-node"
SOCKET = "/run/l104-node/gunicorn.sock"
METRICS_DIR = "/run/l104-node/metrics"
DEFAULTS = Settings()
Unit = dict[str, dict[str, list[str]]]


def _seconds(value: str) -> float:
    """A systemd/nginx time span such as `180`, `180s`, `3min` or `3m`, in seconds."""
    match = re.fullmatch(r"(\d+)\s*(s|sec|m|min|h)?", value.strip())
    assert match, f"not a simple time span: {value!r}"
    return int(match[1]) * {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[match[2]]


def _gunicorn_keepalive() -> int:
    match = re.search(r"^keepalive = (\d+)$", (ROOT / "gunicorn.conf.py").read_text(), re.M)
    assert match, "gunicorn.conf.py sets no keepalive"
    return int(match[1])


# --- systemd ---------------------------------------------------------------------------------


def _unit_entries(text: str) -> Unit:
    """Section -> key -> every value given (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _unit_environment(service: dict[str, list[str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in service.get("Environment", []):
        for item in shlex.split(value):
            name, _, val = item.partition("=")
            env[name] = val
    return env


@pytest.fixture(scope="module")
def unit() -> Unit:
    """The unit file as written for production."""
    return _unit_entries(UNIT.read_text())


def test_unit_runs_gunicorn_as_a_notify_service_of_its_own_user(unit: Unit) -> None:
    service = unit["Service"]
    one = {key: values[-1] for key, values in service.items()}
    assert one["Type"] == "notify"
    # gunicorn's master, the main process, sends READY=1 itself.
    assert one["NotifyAccess"] == "main"
    assert one["User"] == "l104" and one["Group"] == "l104"
    assert one["WorkingDirectory"] == INSTALL_DIR
    assert one["EnvironmentFile"] == "-/etc/l104-node/env"
    assert one["RuntimeDirectory"] == "l104-node"
    assert shlex.split(one["ExecStart"]) == [
        f"{INSTALL_DIR}/.venv/bin/gunicorn",
        "-c",
        f"{INSTALL_DIR}/gunicorn.conf.py",
    ]
    assert one["ExecReload"] == "/bin/kill -s HUP $MAINPID"
    assert one["Restart"] == "on-failure" and _seconds(one["RestartSec"]) == 2
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_stops_gracefully_within_its_timeout(unit: Unit) -> None:
    service = {key: values[-1] for key, values in unit["Service"].items()}
    # TERM to the master only; SIGKILL for everything left when TimeoutStopSec runs out.
    assert service["KillMode"] == "mixed"
    assert service.get("KillSignal", "SIGTERM") == "SIGTERM"
    assert _seconds(service["TimeoutStopSec"]) > DEFAULTS.graceful_timeout


def test_unit_binds_the_socket_nginx_uses_and_wipes_metrics_before_start(unit: Unit) -> None:
    service = unit["Service"]
    env = _unit_environment(service)
    assert shlex.split(env["GUNICORN_CMD_ARGS"]) == ["--bind", f"unix:{SOCKET}"]
    upstream = nginx.load("l104-node.conf").find("upstream")[0]
    assert upstream.value("server")[0] == f"unix:{SOCKET}"
    assert env["PROMETHEUS_MULTIPROC_DIR"] == METRICS_DIR
    assert env["L104_STATE_DIR"].startswith("/run/l104-node/")
    pre = [shlex.split(cmd) for cmd in service["ExecStartPre"]]
    assert pre[0] == ["/bin/rm", "-rf", METRICS_DIR]
    assert any(cmd[:2] == ["/bin/mkdir", "-p"] and METRICS_DIR in cmd for cmd in pre[1:])
    # The env file is read after Environment=, so it can override these (a TCP bind).
    assert service["ReadWritePaths"] == ["/run/l104-node"]


def test_unit_allows_the_descriptors_the_default_settings_use(unit: Unit) -> None:
    service = {key: values[-1] for key, values in unit["Service"].items()}
    limit = int(service["LimitNOFILE"].split(":")[0])
    assert limit >= fd_limits.needed_per_worker(DEFAULTS) > 1024


def test_unit_is_hardened(unit: Unit) -> None:
    service = {key: values[-1] for key, values in unit["Service"].items()}
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert service["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert service["MemoryDenyWriteExecute"] in ("yes", "no")


def _verifiable_copy(tmp_path: Path, extra: str = "") -> Path:
    """The unit with paths and user of this machine, so systemd-analyze can check every
    reference (the executables must exist); `extra` is appended to [Service]."""
    text = UNIT.read_text().replace(INSTALL_DIR, str(ROOT))
    user = getpass.getuser()
    text = re.sub(r"^User=l104$", f"User={user}", text, count=1, flags=re.M)
    text = re.sub(r"^Group=l104$", "Group=root" if user == "root" else "", text, flags=re.M)
    if extra:
        text = text.replace("\n[Install]", f"{extra}\n\n[Install]")
    assert INSTALL_DIR not in text and (ROOT / ".venv" / "bin" / "gunicorn").exists()
    unit_file = tmp_path / "l104-node.service"
    unit_file.write_text(text)
    return unit_file


def _verify(unit_file: Path) -> tuple[int, list[str]]:
    """systemd-analyze verify: its exit code and the output lines about `unit_file` (it may
    also report on unrelated units of this machine)."""
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in lines if unit_file.name in line]


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    returncode, problems = _verify(_verifiable_copy(tmp_path))
    assert problems == []
    assert returncode == 0


def test_systemd_analyze_check_reports_problems(tmp_path: Path) -> None:
    """The check above can fail: systemd only warns (exit 0) about an unknown setting."""
    returncode, problems = _verify(_verifiable_copy(tmp_path, "NoSuchSetting=yes"))
    assert any("NoSuchSetting" in line for line in problems), problems


def test_systemd_security_exposure_stays_low(tmp_path: Path) -> None:
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=25", "--no-pager"]
        + [str(_verifiable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Exit status 0 means an overall exposure level of 2.5 or less ("OK").
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_env_example_names_only_real_settings_and_holds_no_secrets() -> None:
    known = env_vars() | {"GUNICORN_CMD_ARGS"}
    assignments = re.findall(r"^(#?)([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.M)
    assert len(assignments) > 5
    for commented, name, value in assignments:
        assert name in known, f"{name} is not a setting of the node"
        if not commented and name in ("GEMINI_API_KEY", "NODE_API_KEYS", "ADMIN_TOKEN"):
            assert value.startswith("replace-"), f"{name} must be a placeholder"


# --- supervisord -----------------------------------------------------------------------------


def _supervisor_env(value: str) -> dict[str, str]:
    """supervisord's `environment=KEY="value",KEY2=value2`."""
    pairs = re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|[^,]*)(?:,|$)', value.strip())
    return {key: raw.strip('"') for key, raw in pairs}


def test_supervisor_program_restarts_on_failure_and_stops_gracefully() -> None:
    parser = configparser.RawConfigParser(strict=True)
    assert parser.read(SUPERVISOR) == [str(SUPERVISOR)]
    program = parser["program:l104-node"]
    assert program["user"] == "l104"
    assert program["directory"] == INSTALL_DIR
    assert program.getboolean("autostart")
    # Restart any exit but the clean one (exit codes 3 and 4 halt gunicorn's master).
    assert program["autorestart"] == "unexpected"
    assert program["exitcodes"].split(",") == ["0"]
    assert program["stopsignal"] == "TERM"
    assert int(program["stopwaitsecs"]) > DEFAULTS.graceful_timeout
    # TERM to the master alone (it drains its workers); SIGKILL the whole group at the end.
    assert not program.getboolean("stopasgroup")
    assert program.getboolean("killasgroup")
    assert program.getboolean("redirect_stderr")
    assert program["stdout_logfile"]


def test_supervisor_command_wipes_metrics_then_execs_gunicorn_on_the_nginx_socket() -> None:
    parser = configparser.RawConfigParser(strict=True)
    parser.read(SUPERVISOR)
    program = parser["program:l104-node"]
    shell, flag, script = shlex.split(program["command"])
    assert (shell, flag) == ("/bin/sh", "-c")
    steps = [step.strip() for step in script.split("&&")]
    assert steps[0] == f"rm -rf {METRICS_DIR}"
    # exec: supervisord's child is gunicorn's master itself, so TERM reaches it.
    assert shlex.split(steps[-1]) == [
        "exec",
        f"{INSTALL_DIR}/.venv/bin/gunicorn",
        "-c",
        f"{INSTALL_DIR}/gunicorn.conf.py",
    ]
    env = _supervisor_env(program["environment"])
    assert env["PROMETHEUS_MULTIPROC_DIR"] == METRICS_DIR
    assert shlex.split(env["GUNICORN_CMD_ARGS"]) == ["--bind", f"unix:{SOCKET}"]


# --- nginx -----------------------------------------------------------------------------------


def _nginx_check(prefix: nginx.NginxPrefix) -> None:
    try:
        result = nginx.check(prefix)
    finally:
        prefix.cleanup()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert not re.search(r"\[(warn|emerg|alert|crit|error)\]", result.stderr), result.stderr


def test_nginx_accepts_the_single_node_config(tmp_path: Path) -> None:
    upstream = {nginx.NODE_SOCKET: f"127.0.0.1:{nginx.free_port()}"}
    _nginx_check(nginx.prepare(tmp_path, "l104-node.conf", upstream))


def test_nginx_accepts_the_cluster_example(tmp_path: Path) -> None:
    upstreams = {
        "server 10.0.0.11:8081": f"server 127.0.0.1:{nginx.free_port()}",
        "server 10.0.0.12:8081": f"server 127.0.0.1:{nginx.free_port()}",
    }
    _nginx_check(nginx.prepare(tmp_path, "l104-cluster.conf", upstreams))


def test_nginx_check_reports_a_broken_config(tmp_path: Path) -> None:
    """The checks above can fail: a bad directive in the shared snippet is refused."""
    prefix = nginx.prepare(tmp_path, "l104-node.conf", {nginx.NODE_SOCKET: "127.0.0.1:9"})
    snippet = prefix.path / "snippets" / nginx.SNIPPET
    snippet.write_text(snippet.read_text() + "\nproxy_buffering sometimes;\n")
    try:
        result = nginx.check(prefix)
    finally:
        prefix.cleanup()
    assert result.returncode != 0 and "[emerg]" in result.stderr


@pytest.mark.parametrize("site", ["l104-node.conf", "l104-cluster.conf"])
def test_nginx_upstream_keeps_connections_gunicorn_has_not_closed(site: str) -> None:
    (upstream,) = nginx.load(site).find("upstream")
    assert upstream.args == ["l104_node"]
    assert int(upstream.value("keepalive")[0]) > 0
    # nginx must drop an idle connection before gunicorn does, or it may send a POST on a
    # connection gunicorn is closing (not retried: 502).
    assert _seconds(upstream.value("keepalive_timeout")[0]) < _gunicorn_keepalive()
    servers = [d.args for d in upstream.find("server")]
    if site == "l104-node.conf":
        assert servers == [[f"unix:{SOCKET}", "fail_timeout=0"]]
    else:
        assert [s[0] for s in servers] == ["10.0.0.11:8081", "10.0.0.12:8081"]


@pytest.mark.parametrize("site", ["l104-node.conf", "l104-cluster.conf"])
def test_nginx_sites_share_the_proxy_snippet(site: str) -> None:
    (server,) = nginx.load(site).find("server")
    assert server.value("listen") == ["80"]
    assert server.value("include") == [f"snippets/{nginx.SNIPPET}"]


def test_nginx_proxy_settings_match_the_node() -> None:
    params = nginx.load(nginx.SNIPPET)
    headers = {d.args[0]: d.args[1] for d in params.find("proxy_set_header")}
    assert headers == {
        "Connection": "",
        "Host": "$http_host",
        "X-Forwarded-For": "$proxy_add_x_forwarded_for",
        "X-Forwarded-Proto": "$scheme",
        "X-Request-ID": "$l104_request_id",
    }
    assert params.value("proxy_http_version") == ["1.1"]
    assert params.value("proxy_redirect") == ["off"]
    assert params.value("client_max_body_size") == [f"{DEFAULTS.max_request_bytes // 2**20}m"]
    assert DEFAULTS.max_request_bytes % 2**20 == 0
    assert _seconds(params.value("proxy_read_timeout")[0]) > DEFAULTS.gunicorn_timeout
    next_upstream = params.value("proxy_next_upstream")
    assert next_upstream == ["error", "timeout"] and "non_idempotent" not in next_upstream
    locations = {tuple(d.args): d for d in params.find("location")}
    for streaming in (("~", ":streamGenerateContent$"), ("/api/",)):
        location = locations[streaming]
        assert location.value("proxy_buffering") == ["off"]
        assert location.value("proxy_cache") == ["off"]
        assert _seconds(location.value("proxy_read_timeout")[0]) > DEFAULTS.gunicorn_timeout
        # A location with a proxy_set_header of its own would drop all the headers above.
        assert location.find("proxy_set_header") == []
    for restricted in (("^~", "/metrics"), ("^~", "/self")):
        rules = [(d.name, d.args) for d in locations[restricted].block or []]
        assert ("allow", ["127.0.0.1"]) in rules
        assert rules[-2:] == [("deny", ["all"]), ("proxy_pass", ["http://l104_node"])]
    assert all(d.value("proxy_pass") == ["http://l104_node"] for d in locations.values())


def test_request_id_map_prefers_the_clients_id() -> None:
    for site in ("l104-node.conf", "l104-cluster.conf"):
        (mapping,) = nginx.load(site).find("map")
        assert mapping.args == ["$http_x_request_id", "$l104_request_id"]
        rules = {d.name: d.args for d in mapping.block or []}
        assert rules == {"default": ["$http_x_request_id"], "": ["$request_id"]}
