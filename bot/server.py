"""`oncall-bot serve`: HTTP mode on gunicorn (threaded worker), with a graceful SIGTERM.

On SIGTERM gunicorn stops accepting and finishes the requests in flight; then our worker drains
the commands already acknowledged and sends what is due in the outbox, and exits well within
10 seconds. What could not be sent stays in the outbox for the next start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from bot.app import SlackBot
from bot.jsonlog import JsonFormatter

REQUEST_THREADS = 16
GRACEFUL_SECONDS = 9
DRAIN_SECONDS = 7


class JsonLogger(Logger):
    """gunicorn's own lines (boot, signals, worker exits) as JSON too."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())


class DrainingWorker(ThreadWorker):
    def run(self) -> None:
        super().run()
        bot: SlackBot = self.wsgi
        bot.drain(DRAIN_SECONDS)


class Server(BaseApplication):
    def __init__(self, build: Callable[[], SlackBot], host: str, port: int):
        self.build = build
        self.bind = f"{host}:{port}"
        super().__init__()

    def load_config(self) -> None:
        settings = {
            "bind": self.bind,
            "workers": 1,   # one process: the command pool and the outbox live in it
            "worker_class": "bot.server.DrainingWorker",
            "threads": REQUEST_THREADS,
            "graceful_timeout": GRACEFUL_SECONDS,
            "timeout": 30,
            "keepalive": 5,
            "logger_class": "bot.server.JsonLogger",
            "errorlog": "-",
            "accesslog": None,
            "loglevel": "info",
            "control_socket_disable": True,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> SlackBot:
        bot = self.build()
        bot.start()
        logging.getLogger(__name__).info("serving Slack on %s", self.bind)
        return bot
