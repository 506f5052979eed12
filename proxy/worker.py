"""The gunicorn worker that serves the proxy on asyncio: aiohttp's worker with the proxy's server.

aiohttp's own GunicornWebWorker serves a web.Application with default connection settings and
stops at SIGTERM. This one serves ProxyApp.handle through ProxyServer (deadlines for slow
clients, JSON errors, handler cancellation when a client leaves) and drains at SIGTERM.
"""
from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal

from aiohttp import web
from aiohttp.worker import GunicornWebWorker

from .app import ProxyApp
from .protocol import ProxyServer

log = logging.getLogger("proxy")

# After the drain (or at SIGINT/SIGQUIT), how long aiohttp lets handlers finish before
# cancelling them: by then nothing should be running that deserves to.
SHUTDOWN_GRACE_S = 1.0
# Used when the hard limit is "unlimited", which the kernel refuses as a soft limit.
NOFILE_WHEN_UNLIMITED = 1 << 20


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_WHEN_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft  # keep serving with what the host allows
    return target


class ProxyWorker(GunicornWebWorker):
    """One asyncio event loop serving every client connection of the proxy."""

    def init_process(self) -> None:
        # Every client connection and every upstream connection is a file descriptor; the
        # usual soft limit of 1024 would refuse connections long before memory runs short.
        self._nofile = raise_open_file_limit()
        self._drain_started = False
        super().init_process()

    def init_signals(self) -> None:
        super().init_signals()
        # SIGTERM drains instead of stopping (SIGINT and SIGQUIT still stop at once).
        self.loop.add_signal_handler(signal.SIGTERM, self._start_drain)

    def _start_drain(self) -> None:
        if self._drain_started:
            return
        self._drain_started = True
        app = getattr(self, "wsgi", None)
        if not isinstance(app, ProxyApp):  # not loaded yet: nothing to drain
            self.alive = False
            self._notify_waiter_done()
            return
        app.drain.begin()
        log.info("SIGTERM: draining for up to %g s; %d request(s) in flight",
                 app.config.drain_timeout_s, app.drain.in_flight)
        self.loop.create_task(self._drain(app))

    async def _drain(self, app: ProxyApp) -> None:
        try:
            await asyncio.wait_for(app.drain.wait_idle(), app.config.drain_timeout_s)
        except asyncio.TimeoutError:
            log.warning("drain timeout: stopping with %d request(s) still in flight",
                        app.drain.in_flight)
        self.alive = False
        self._notify_waiter_done()  # wake the serve loop now rather than within a second

    async def _run(self) -> None:
        app = self.wsgi
        if not isinstance(app, ProxyApp):
            raise RuntimeError(f"the proxy worker serves a ProxyApp, got {app!r}")
        config = app.config
        await app.start()
        server = ProxyServer(
            app.handle,
            # A client that disconnects cancels its handler at once, which closes the
            # upstream connection, which makes the API cancel the generation.
            handler_cancellation=True,
            header_timeout=config.header_timeout_s,
            on_header_timeout=app.header_timeout,
            on_bad_request=app.bad_request,
            keepalive_timeout=config.keepalive_timeout_s,
            access_log=None,  # the proxy writes its own access log line
            logger=log,
        )
        runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_GRACE_S)
        await runner.setup()
        for sock in self.sockets:
            await web.SockSite(runner, sock).start()
        metrics_runner = await self._serve_metrics(app)
        self.booted = True
        log.info("serving on %s (open file limit %d)",
                 ", ".join(str(sock) for sock in self.sockets), self._nofile)
        try:
            while self.alive:
                self.notify()
                if self.ppid != os.getppid():
                    log.info("parent changed, shutting down")
                    self.alive = False
                else:
                    await self._wait_next_notify()
        finally:
            app.drain.stopping = True
            if metrics_runner is not None:
                await metrics_runner.cleanup()
            await runner.cleanup()
            await app.close()

    async def _serve_metrics(self, app: ProxyApp) -> web.ServerRunner | None:
        """Listen for scrapes on PROXY_METRICS_HOST:PROXY_METRICS_PORT, apart from clients."""
        config = app.config
        if not config.metrics_port:
            return None
        runner = web.ServerRunner(web.Server(app.handle_metrics, access_log=None, logger=log),
                                  shutdown_timeout=SHUTDOWN_GRACE_S)
        await runner.setup()
        # Bound by the worker, not gunicorn: there is one worker, and a restarted one binds
        # again (SO_REUSEADDR) once the old one has gone.
        await web.TCPSite(runner, config.metrics_host, config.metrics_port).start()
        log.info("metrics on http://%s:%d/metrics", config.metrics_host, config.metrics_port)
        return runner
