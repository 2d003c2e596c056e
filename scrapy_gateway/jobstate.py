"""Keep what the gateway learned in the crawl's JOBDIR, so a paused crawl resumes with it."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from scrapy.utils.job import job_dir

from scrapy_gateway.core import state
from scrapy_gateway.core.gateway import Gateway

logger = logging.getLogger("scrapy_gateway")
FILENAME = "gateway-state.json"


def _path(settings: Any) -> Path | None:
    folder = job_dir(settings)
    return Path(folder, FILENAME) if folder else None


def restore(gateway: Gateway, settings: Any) -> None:
    path = _path(settings)
    if path is None or not path.exists():
        return
    try:
        restored = state.load(gateway, json.loads(path.read_text(encoding="utf-8")), time.monotonic())
    except (OSError, ValueError) as exc:
        # A damaged file must not stop the crawl: start from scratch, and say so.
        logger.warning("scrapy-gateway: ignoring %(path)s: %(error)s", {"path": str(path), "error": exc})
        return
    logger.info("scrapy-gateway: restored the health of %(n)d proxies from JOBDIR", {"n": restored})


def save(gateway: Gateway, settings: Any) -> None:
    path = _path(settings)
    if path is None:
        return
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state.dump(gateway, time.monotonic())), encoding="utf-8")
    os.replace(temporary, path)  # never leave a half-written file for the resume to choke on
