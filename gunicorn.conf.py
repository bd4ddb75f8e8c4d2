"""gunicorn settings for L104 Node; the hooks call into app.workers.supervision."""

from app.clients.registry import load_or_exit
from app.observability.logs import gunicorn_logconfig
from app.workers.malloc_arenas import limit_malloc_arenas
from app.workers.supervision import Supervisor, load_settings

limit_malloc_arenas()  # before any worker is forked: see app/workers/malloc_arenas.py
_settings = load_settings()
load_or_exit(_settings.clients_file, _settings.node_api_keys)  # a bad file: no start
_supervisor = Supervisor(_settings)

wsgi_app = "wsgi:app"
bind = f"{_settings.host}:{_settings.port}"
workers = _settings.web_concurrency
worker_class = _settings.gunicorn_worker_class
# gunicorn turns a sync worker with threads > 1 into gthread: threads only for gthread.
threads = _settings.gunicorn_threads if worker_class == "gthread" else 1
# Connections a gevent (or gthread) worker holds; the app refuses calls past
# MAX_CALLS_IN_FLIGHT itself, so that the rest of these stay free for /health and refusals.
worker_connections = _settings.worker_connections
timeout = _settings.gunicorn_timeout
graceful_timeout = _settings.graceful_timeout
# Idle keep-alive connections hold a recycling worker until they time out (gunicorn closes a
# connection only after its next response), so this also bounds a graceful recycle's drain.
keepalive = 2
# Each instance would otherwise share ~/.gunicorn/gunicorn.ctl with every other master.
control_socket_disable = True
# Request smuggling and oversize headers: refuse early.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# gunicorn's own error and access logs as JSON lines, like the node's.
logconfig_dict = gunicorn_logconfig(_settings)
logger_class = (
    "app.workers.access_log.AccessLogger"  # the same lines, without gunicorn's atom table
)


def on_starting(server):
    _supervisor.on_starting(server)


def post_worker_init(worker):
    _supervisor.post_worker_init(worker)


def post_request(worker, req, environ, resp):
    _supervisor.post_request(worker, req, environ, resp)


def worker_abort(worker):
    _supervisor.worker_abort(worker)


def child_exit(server, worker):
    _supervisor.child_exit(server, worker)


def on_exit(server):
    _supervisor.on_exit(server)
