"""An OpenCV window for the commands that show video (`live`, `track --show`), and the check that one
can be opened at all, so a headless machine gets one clear line instead of a crash."""

from __future__ import annotations

import os
import socket
import sys


def check_display(hint: str = "run headless with --no-window") -> None:
    """Fail with a clear line when no window can be opened (no X/Wayland display, or headless OpenCV)."""
    from sipvis.errors import SipvisError

    hint = f"; {hint}"
    if sys.platform.startswith("linux"):
        display, wayland = os.environ.get("DISPLAY"), os.environ.get("WAYLAND_DISPLAY")
        if not display and not wayland:
            raise SipvisError(f"no display available (DISPLAY is not set){hint}")
        # OpenCV's Qt backend aborts the whole process when it cannot reach the display: check first
        if display and not wayland and not _x_display_reachable(display):
            raise SipvisError(f"no display available (cannot connect to X display {display}){hint}")
    import cv2

    info = cv2.getBuildInformation()
    gui = info.split("GUI:", 1)[1].split("\n\n", 1)[0] if "GUI:" in info else ""
    if gui and "YES" not in gui and "WIN32UI" not in gui and "COCOA" not in gui:
        raise SipvisError(f"this OpenCV build has no window support (opencv-python-headless?){hint}")


def _x_display_reachable(display: str) -> bool:
    """Whether an X server answers at `display` (`[host]:N[.screen]`): a socket connect, no X protocol."""
    host, _, rest = display.rpartition(":")
    number = rest.split(".", 1)[0]
    if not number.isdigit():
        return False
    try:
        if host in ("", "unix"):
            for path in (f"/tmp/.X11-unix/X{number}", f"\0/tmp/.X11-unix/X{number}"):  # file, then abstract
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(2.0)
                    try:
                        sock.connect(path)
                        return True
                    except OSError:
                        continue
            return False
        with socket.create_connection((host, 6000 + int(number)), timeout=2.0):
            return True
    except OSError:
        return False


class Window:
    """The OpenCV window: show frames, read keys, notice when the user closes it."""

    def __init__(self, title: str = "sipvis") -> None:
        import cv2

        from sipvis.errors import SipvisError

        self.cv2 = cv2
        self.title = title
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        except cv2.error as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
            raise SipvisError(f"cannot open a window ({first})") from None
        self._shown = False  # before the first frame the window has no size, and "closed" means nothing

    def show(self, image) -> None:
        self.cv2.imshow(self.title, image)
        self._shown = True

    def poll(self) -> int:
        """Let the window draw and return the key pressed (-1 for none)."""
        key = self.cv2.waitKey(1)
        return -1 if key < 0 else key & 0xFF

    def closed(self) -> bool:
        if not self._shown:
            return False
        try:
            return self.cv2.getWindowProperty(self.title, self.cv2.WND_PROP_VISIBLE) < 1
        except self.cv2.error:
            return True

    def close(self) -> None:
        try:
            self.cv2.destroyWindow(self.title)
            self.cv2.waitKey(1)
        except self.cv2.error:
            pass
