"""Log output for `fastpath --log-format text|json`.

JSON logs are one object per line (time, level, logger, message, pid and any
exception), the shape log collectors (Loki, Fluent Bit, CloudWatch) ingest
without a parser. The choice is also put in $FASTPATH_LOG_FORMAT so the
processes fastpath starts log the same way.
"""
from __future__ import annotations

import json
import logging
import os
import time

FORMATS = ("text", "json")
ENV = "FASTPATH_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; never raises on odd arguments."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def default_format() -> str:
    value = os.environ.get(ENV, "text")
    return value if value in FORMATS else "text"


def configure(level: str, fmt: str) -> None:
    """Sets up the root logger once for this process and hands the format to its children."""
    os.environ[ENV] = fmt
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
