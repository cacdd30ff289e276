"""
The C{[extension:websockets]} settings, checked without importing the
extension's code (or autobahn).
"""

import importlib.util
from dataclasses import dataclass
from typing import Mapping, Optional

#: Room for the headers and the envelope of a frame, over the post limit.
FRAME_OVERHEAD = 65536


@dataclass(frozen=True)
class WebsocketSettings:
    """
    @ivar maxFrameBytes: the largest request frame (bytes); by default
        (L{None}) the node's post limit plus L{FRAME_OVERHEAD}.
    @ivar sendBufferBytes: bytes waiting for a socket that reads too slowly
        before it is closed.
    @ivar maxSubscriptions: the subscriptions one socket may hold.
    @ivar pingInterval: seconds between keep-alive pings (0: none).
    @ivar reauthInterval: seconds between re-validations of the
        credentials each subscription was made with.
    """

    maxFrameBytes: Optional[int] = None
    sendBufferBytes: int = 1048576
    maxSubscriptions: int = 100
    pingInterval: int = 30
    reauthInterval: int = 300


#: Each setting: its field and its smallest value.
SETTINGS = {
    "max-frame-bytes": ("maxFrameBytes", 1024),
    "send-buffer-bytes": ("sendBufferBytes", 1024),
    "max-subscriptions": ("maxSubscriptions", 1),
    "ping-interval": ("pingInterval", 0),
    "reauth-interval": ("reauthInterval", 1),
}


def parse(settings: Mapping[str, str]) -> WebsocketSettings:
    """
    @raise ValueError: naming the setting that is wrong.
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(
            f"unknown setting(s): {', '.join(unknown)} "
            f"(known: {', '.join(sorted(SETTINGS))})"
        )
    values = {}
    for name, text in settings.items():
        field, low = SETTINGS[name]
        text = text.strip()
        if not text.isascii() or not text.isdigit() or int(text) < low:
            raise ValueError(f"{name} must be an integer of at least {low}")
        values[field] = int(text)
    return WebsocketSettings(**values)


def check(settings: Mapping[str, str]) -> None:
    """
    The plugin's checker: the settings are valid and autobahn is installed.
    """
    parse(settings)
    if importlib.util.find_spec("autobahn") is None:
        raise ValueError(
            "needs autobahn, which is not installed (pip install 'marconi[websockets]')"
        )
