"""Log lines a request cannot forge.

Log messages quote values from requests (an owner's name, an image reference, a namespace, an
error text a Notary server chose). A value holding a newline would start a line of its own in the
text log, one that reads like a record Ostiary wrote ("... INFO ostiary admission allowed"). So
every handler Ostiary and gunicorn log through formats with SafeFormatter, which escapes control
characters in the final message (after the %-arguments are put in): a newline becomes `\\n`, any
other C0/C1 control, DEL and the Unicode line and paragraph separators become `\\xNN`/`\\uNNNN`.
A record is then exactly one line; the only further lines are a traceback or stack of Ostiary's own
(log.exception), and each of those is indented, so no line of it can pass for a record either.

Escaping at the formatter, not at each call, holds for every log call present and future.
"""

from __future__ import annotations

import logging
import re
from typing import TextIO

from gunicorn import glogging

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with every control character (and U+2028/U+2029) written as an escape."""
    return _CONTROL.sub(_escape_char, text)


def _indent(text: str) -> str:
    return "\n".join("    " + escape(line) for line in text.splitlines())


class SafeFormatter(logging.Formatter):
    """logging.Formatter whose message is one line (control characters escaped) and whose
    traceback lines are indented under it."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + _indent(record.exc_text)
        if record.stack_info:
            text += "\n" + _indent(self.formatStack(record.stack_info))
        return text


def safe_handler(handler: logging.Handler) -> logging.Handler:
    """`handler`, its formatter replaced by a SafeFormatter of the same format."""
    current = handler.formatter
    fmt = getattr(current, "_fmt", None) or FORMAT
    handler.setFormatter(SafeFormatter(fmt, getattr(current, "datefmt", None)))
    return handler


def configure(level: int) -> None:
    """The root logger of every `ostiary` command: stderr, FORMAT, escaped."""
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


class GunicornLogger(glogging.Logger):
    """gunicorn's logger (error and access logs) formatting through SafeFormatter."""

    def _set_handler(
        self, log: logging.Logger, output: str | None, fmt: logging.Formatter, stream: TextIO | None = None
    ) -> None:
        """`output`: gunicorn's errorlog or accesslog setting ("-": `stream`, else a file path)."""
        super()._set_handler(log, output, SafeFormatter(fmt._fmt, fmt.datefmt), stream)
