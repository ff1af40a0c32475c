"""gunicorn's loggers, formatted like the rest of the service (JSON off a terminal).

`orchestrator api` passes `--logger-class api.gunicorn_logger.Logger`: gunicorn's error
and access logs get our formatter, and the root logger (the app's own records) our
handler, before the workers fork.
"""

from __future__ import annotations

from gunicorn import glogging

from orchestrator import logs, masking
from orchestrator.config import Settings


class Logger(glogging.Logger):
    def setup(self, cfg) -> None:
        super().setup(cfg)
        settings = Settings.from_env()
        logs.configure(cfg.loglevel, settings.log_format, masking.known_secrets(settings))
        for log in (self.error_log, self.access_log):
            for h in log.handlers:
                h.setFormatter(logs.make_formatter(settings.log_format, getattr(h, "stream", None)))
                h.addFilter(logs.ContextFilter())
