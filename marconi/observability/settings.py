"""
The C{[monitoring]} settings, checked without importing any monitoring
client library (so C{twistd marconi --help} and option checks stay cheap).

Common to every monitoring driver:

- C{driver}: the driver's name.
- C{depth_interval}: seconds between samples of the deepest queues
  (default 30; 0 turns sampling off).
- C{depth_limit}: how many of the deepest queues are sampled (default 20).

The C{prometheus} driver adds:

- C{listen}: endpoint descriptions (one per line) of its own HTTP listener,
  which serves C{/metrics}; default C{tcp:9100:interface=127.0.0.1}; empty
  for none.
- C{public}: C{true} to serve C{/metrics} on the API listeners as well
  (default C{false}).
"""

import importlib.util
from dataclasses import dataclass
from typing import Mapping

from marconi.core.text import parseBoolean

DEFAULT_METRICS_LISTEN = "tcp:9100:interface=127.0.0.1"
COMMON = frozenset({"driver", "depth_interval", "depth_limit"})


@dataclass(frozen=True)
class Sampling:
    interval: float = 30.0
    limit: int = 20


def sampling(settings: Mapping[str, str]) -> Sampling:
    """
    @raise ValueError: with a one-line reason.
    """
    values: dict = {}
    if "depth_interval" in settings:
        try:
            values["interval"] = float(settings["depth_interval"])
        except ValueError:
            raise ValueError("[monitoring] depth_interval must be a number") from None
        if values["interval"] < 0:
            raise ValueError("[monitoring] depth_interval must not be negative")
    if "depth_limit" in settings:
        try:
            values["limit"] = int(settings["depth_limit"])
        except ValueError:
            raise ValueError("[monitoring] depth_limit must be an integer") from None
        if not 1 <= values["limit"] <= 1000:
            raise ValueError("[monitoring] depth_limit must be from 1 to 1000")
    return Sampling(**values)


def boolean(settings: Mapping[str, str], key: str, default: bool) -> bool:
    """
    The boolean setting C{key} (words of L{parseBoolean}), or C{default}.

    @raise ValueError: with a one-line reason naming C{key}.
    """
    raw = settings.get(key)
    if raw is None:
        return default
    try:
        return parseBoolean(raw)
    except ValueError:
        raise ValueError(f"{key} must be true or false, not {raw!r}") from None


def listen(settings: Mapping[str, str]) -> tuple:
    raw = settings.get("listen", DEFAULT_METRICS_LISTEN)
    return tuple(line.strip() for line in raw.splitlines() if line.strip())


def checkPrometheus(settings: Mapping[str, str]) -> None:
    unknown = set(settings) - COMMON - {"listen", "public"}
    if unknown:
        raise ValueError(
            f"unknown [monitoring] setting(s): {', '.join(sorted(unknown))}"
        )
    sampling(settings)
    boolean(settings, "public", False)
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    for description in listen(settings):
        try:
            serverFromString(reactor, description)
        except Exception as e:
            raise ValueError(
                f"[monitoring] invalid listen description {description!r}: {e}"
            ) from None
    if importlib.util.find_spec("prometheus_client") is None:
        raise ValueError(
            "the prometheus monitoring driver needs prometheus-client "
            "(pip install 'marconi[prometheus]')"
        )
