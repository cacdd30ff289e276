"""
The C{[extension:subscriptions]} section, checked without importing the
extension's code (see L{marconi.plugins.marconi_extensions}).
"""

from dataclasses import dataclass, fields
from typing import Mapping, Optional

from marconi.core.text import parseBoolean

#: Zaqar's default subscription TTL and its minimum.
DEFAULT_TTL = 3600
MIN_TTL = 60
#: The longest TTL a subscription may be given (ten years).
MAX_TTL = 10 * 365 * 24 * 3600
SUBSCRIBER_TYPES = ("http", "https", "mailto")


def hasControl(text: str) -> bool:
    """
    Whether C{text} holds a control character (C0, including CR, LF and
    NUL, or DEL), which could end a mail or HTTP header early.
    """
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


@dataclass(frozen=True)
class Settings:
    """
    @ivar smtpHost: the mail relay C{mailto:} subscribers are sent through.
    @ivar smtpFrom: the sender of every notification mail (a
        subscription cannot name another).
    @ivar requireConfirmation: new subscriptions receive nothing until they
        are confirmed (Zaqar's C{require_confirmation}).
    @ivar signedURLKey: the node's C{[signed_url] secret_key}, to sign the
        confirmation link sent to a subscriber.
    @ivar publicURL: the node's public URL, for the confirmation link.
    @ivar timeout: seconds a webhook or mail delivery may take in all.
    @ivar redeliverAfter: seconds after which a delivery started by a node
        that stopped without finishing is tried again.
    @ivar pollInterval: seconds between looks for deliveries that became
        due (retries, and those of a node that stopped).
    @ivar sweepInterval: seconds between removals of expired subscriptions.
    @ivar outboxTTL: seconds a pending delivery is kept at most.
    @ivar maxInFlight: deliveries running at once.
    @ivar subscriberTypes: the URL schemes subscribers may use.
    @ivar allowPrivate: webhooks may be delivered to loopback, link-local,
        private, unspecified and multicast addresses.
    @ivar maxSubscriptionsPerQueue: the live subscriptions a queue may have.
    """

    smtpHost: str = "localhost"
    smtpPort: int = 25
    smtpFrom: str = "marconi@localhost"
    requireConfirmation: bool = False
    signedURLKey: Optional[str] = None
    publicURL: str = ""
    defaultTTL: int = DEFAULT_TTL
    timeout: float = 10.0
    redeliverAfter: int = 60
    pollInterval: float = 5.0
    sweepInterval: float = 60.0
    outboxTTL: int = 14 * 24 * 3600
    maxInFlight: int = 100
    subscriberTypes: tuple = SUBSCRIBER_TYPES
    allowPrivate: bool = False
    maxSubscriptionsPerQueue: int = 100


_NAMES = {
    "smtp_host": "smtpHost",
    "smtp_port": "smtpPort",
    "smtp_from": "smtpFrom",
    "require_confirmation": "requireConfirmation",
    "signed_url_key": "signedURLKey",
    "public_url": "publicURL",
    "default_ttl": "defaultTTL",
    "timeout": "timeout",
    "redeliver_after": "redeliverAfter",
    "poll_interval": "pollInterval",
    "sweep_interval": "sweepInterval",
    "outbox_ttl": "outboxTTL",
    "max_in_flight": "maxInFlight",
    "subscriber_types": "subscriberTypes",
    "allow_private": "allowPrivate",
    "max_subscriptions_per_queue": "maxSubscriptionsPerQueue",
}

# The smallest value of each number.
_LOWEST = {
    "smtpPort": 1,
    "defaultTTL": MIN_TTL,
    "timeout": 0.1,
    "redeliverAfter": 1,
    "pollInterval": 0.1,
    "sweepInterval": 1,
    "outboxTTL": 60,
    "maxInFlight": 1,
    "maxSubscriptionsPerQueue": 1,
}


def parseSettings(section: Mapping[str, str]) -> Settings:
    """
    @raise ValueError: naming the setting that is wrong.
    """
    unknown = sorted(set(section) - set(_NAMES))
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
    types = {f.name: f.type for f in fields(Settings)}
    values: dict = {}
    for name, text in section.items():
        attribute = _NAMES[name]
        kind = types[attribute]
        try:
            if kind in (bool, "bool"):
                value: object = parseBoolean(text)
            elif kind in (int, "int"):
                value = int(text)
            elif kind in (float, "float"):
                value = float(text)
            elif attribute == "subscriberTypes":
                value = tuple(text.replace(",", " ").split())
            else:
                value = text.strip()
                if hasControl(value):
                    raise ValueError
        except ValueError:
            raise ValueError(
                f"{name} must be {_kindName(kind)}, not {text!r}"
            ) from None
        lowest = _LOWEST.get(attribute)
        if lowest is not None and value < lowest:  # type: ignore[operator]
            raise ValueError(f"{name} must be at least {lowest}")
        values[attribute] = value
    settings = Settings(**values)
    wrong = sorted(set(settings.subscriberTypes) - set(SUBSCRIBER_TYPES))
    if wrong or not settings.subscriberTypes:
        raise ValueError(
            f"subscriber_types may name {', '.join(SUBSCRIBER_TYPES)}"
            + (f", not {', '.join(wrong)}" if wrong else "")
        )
    if settings.requireConfirmation and not settings.signedURLKey:
        raise ValueError(
            "require_confirmation needs signed_url_key (the node's [signed_url] "
            "secret_key), to sign the link a subscriber confirms with"
        )
    return settings


def checkSettings(section: Mapping[str, str]) -> None:
    parseSettings(section)


def _kindName(kind: object) -> str:
    return {
        bool: "true or false",
        "bool": "true or false",
        int: "an integer",
        "int": "an integer",
        float: "a number",
        "float": "a number",
    }.get(kind, "text")  # type: ignore[call-overload]
