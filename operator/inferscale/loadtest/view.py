"""Where the live view goes: redrawn in place on a terminal, one line per refresh elsewhere.

Plain ANSI (cursor up, clear to the end of the screen), no extra dependency. Lines are cut to the
terminal's width, so a wrapped line never throws the redraw's line count off.
"""

from __future__ import annotations

import shutil
from typing import TextIO

from inferscale.loadtest.report import LiveFrame, render_line, render_live

CURSOR_UP_LINES = "\x1b[{n}F"
CLEAR_TO_END = "\x1b[J"


class LiveView:
    """Draws :class:`~.report.LiveFrame` objects on ``stream``."""

    def __init__(self, stream: TextIO, tty: bool) -> None:
        """Redraw in place when ``tty``, else append one line per frame."""
        self.stream = stream
        self.tty = tty
        self._drawn = 0

    def draw(self, frame: LiveFrame) -> None:
        """Show one frame."""
        if not self.tty:
            self.stream.write(render_line(frame) + "\n")
            self.stream.flush()
            return
        width = max(shutil.get_terminal_size((100, 24)).columns - 1, 20)
        lines = [line[:width] for line in render_live(frame)]
        out = []
        if self._drawn:
            out.append(CURSOR_UP_LINES.format(n=self._drawn) + CLEAR_TO_END)
        out.append("\n".join(lines) + "\n")
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)
