"""app/logsafe.py: a record is one line whatever its arguments hold; tracebacks are indented."""

from __future__ import annotations

import io
import logging

from app.logsafe import FORMAT, GunicornLogger, SafeFormatter, escape


def record_text(message: str, *args: object, exc: bool = False) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter(FORMAT))
    logger = logging.getLogger("test.logsafe")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        if exc:
            try:
                raise ValueError("bad\n2026-01-01 00:00:00,000 INFO ostiary forged")
            except ValueError:
                logger.exception(message, *args)
        else:
            logger.warning(message, *args)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_arguments_cannot_start_a_line():
    text = record_text("owner %s/%s", "ns", "x\n2026-01-01 INFO forged\r\x00\x85\u2028\x7f")
    assert text.count("\n") == 1  # the record's own end
    assert "owner ns/x\\n2026-01-01 INFO forged\\r\\x00\\x85\\u2028\\x7f" in text


def test_traceback_lines_are_indented_under_the_record():
    lines = record_text("admission %s failed", "u\n1", exc=True).splitlines()
    assert "admission u\\n1 failed" in lines[0]
    assert all(line.startswith("    ") for line in lines[1:]) and len(lines) > 2
    assert any("forged" in line for line in lines[1:])


def test_escape_keeps_printable_text():
    assert escape("plain: ünïcode ✓ \\n") == "plain: ünïcode ✓ \\n"


def test_gunicorn_logs_through_the_safe_formatter():
    from gunicorn.config import Config

    cfg = Config()
    cfg.set("errorlog", "-")
    logger = GunicornLogger(cfg)
    handlers = [h for h in logger.error_log.handlers if getattr(h, "_gunicorn", False)]
    assert handlers and all(isinstance(h.formatter, SafeFormatter) for h in handlers)
