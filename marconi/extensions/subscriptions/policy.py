"""
What a subscription document may say, and the retry policy of deliveries.

The retry policy has Zaqar's field names and meaning.  It is the queue's
C{_retry_policy} metadata, or the subscription's C{options._retry_policy},
which wins unless either says C{ignore_subscription_override}.  After a
failed delivery the next attempts come:

  1. C{retries_with_no_delay} times at once (default 3);
  2. C{minimum_delay_retries} times after C{minimum_delay} seconds each
     (defaults 3 and 5);
  3. then after delays growing from C{minimum_delay} to C{maximum_delay}
     (default 30) by C{retry_backoff_function}: C{linear} (in steps of
     L{LINEAR_INTERVAL} seconds), C{arithmetic}, C{geometric} or
     C{exponential}, one attempt per step;
  4. C{maximum_delay_retries} times after C{maximum_delay} (default 3);

and then the delivery is given up (and logged).
"""

import ipaddress
import math
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit

from marconi.core.errors import InvalidBody, ValidationFailed
from marconi.extensions.subscriptions.settings import MAX_TTL, MIN_TTL, hasControl

RETRY_POLICY = "_retry_policy"
LINEAR_INTERVAL = 5
BACKOFF_FUNCTIONS = ("linear", "arithmetic", "geometric", "exponential")
DEFAULT_POLICY = {
    "retries_with_no_delay": 3,
    "minimum_delay_retries": 3,
    "minimum_delay": 5,
    "maximum_delay": 30,
    "maximum_delay_retries": 3,
    "retry_backoff_function": "linear",
    "ignore_subscription_override": False,
}
_COUNTS = ("retries_with_no_delay", "minimum_delay_retries", "maximum_delay_retries")
_DELAYS = ("minimum_delay", "maximum_delay")
#: Bounds that keep a policy's schedule finite and short enough to hold.
MAX_RETRIES = 100
MAX_DELAY = 24 * 3600
MAX_STEPS = 100

#: What a subscription document may hold.
FIELDS = ("subscriber", "ttl", "options")
#: Headers C{options.post_headers} may not set (besides C{X-Marconi-*}):
#: they would change where or how the request is sent.
FORBIDDEN_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection"}
)


def privateAddress(address: str) -> bool:
    """
    Whether the IP address C{address} is loopback, link-local, private
    (RFC 1918, unique local), unspecified, multicast or reserved: not a
    webhook's unless C{allow_private} says so.

    @raise ValueError: C{address} is not an IP address.
    """
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
    )


def checkRetryPolicy(policy: Any) -> dict:
    """
    Check a C{_retry_policy} value.

    @return: it, as given.
    @raise ValidationFailed: saying what is wrong.
    """
    if not isinstance(policy, dict):
        raise ValidationFailed(f"{RETRY_POLICY} must be a JSON object.")
    unknown = sorted(set(policy) - set(DEFAULT_POLICY))
    if unknown:
        raise ValidationFailed(
            f"{RETRY_POLICY} has unknown field(s) {', '.join(unknown)}; it may "
            f"have {', '.join(DEFAULT_POLICY)}."
        )
    for name in _COUNTS + _DELAYS:
        value = policy.get(name, DEFAULT_POLICY[name])
        high = MAX_RETRIES if name in _COUNTS else MAX_DELAY
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationFailed(f"{RETRY_POLICY}.{name} must be an integer.")
        if not 0 <= value <= high:
            raise ValidationFailed(
                f"{RETRY_POLICY}.{name} must be between 0 and {high}."
            )
    low, high = _delays(policy)
    if low > high:
        raise ValidationFailed(
            f"{RETRY_POLICY}.minimum_delay may not exceed maximum_delay."
        )
    function = policy.get("retry_backoff_function", "linear")
    if function not in BACKOFF_FUNCTIONS:
        raise ValidationFailed(
            f"{RETRY_POLICY}.retry_backoff_function must be one of "
            f"{', '.join(BACKOFF_FUNCTIONS)}."
        )
    if not isinstance(policy.get("ignore_subscription_override", False), bool):
        raise ValidationFailed(
            f"{RETRY_POLICY}.ignore_subscription_override must be a boolean."
        )
    return policy


def _delays(policy: Mapping[str, Any]) -> tuple[int, int]:
    return (
        policy.get("minimum_delay", DEFAULT_POLICY["minimum_delay"]),
        policy.get("maximum_delay", DEFAULT_POLICY["maximum_delay"]),
    )


def effectivePolicy(
    queuePolicy: Optional[Mapping[str, Any]],
    subscriptionPolicy: Optional[Mapping[str, Any]],
) -> dict:
    """
    The policy a delivery follows: the subscription's, else the queue's,
    else Zaqar's defaults; the queue's when either asks to ignore the
    subscription's.
    """
    queuePolicy = dict(queuePolicy or {})
    subscriptionPolicy = dict(subscriptionPolicy or {})
    ignore = queuePolicy.get("ignore_subscription_override") or (
        subscriptionPolicy.get("ignore_subscription_override")
    )
    chosen = queuePolicy if ignore else (subscriptionPolicy or queuePolicy)
    return {**DEFAULT_POLICY, **chosen}


def backoff(function: str, low: int, high: int) -> list[float]:
    """
    The delays of the backoff phase, from C{low} towards C{high}.
    """
    steps = min(MAX_STEPS, int((high - low) / LINEAR_INTERVAL))
    if steps < 1 or low <= 0:
        return [float(low + LINEAR_INTERVAL * i) for i in range(max(steps, 0))]
    if function == "linear":
        return [float(low + LINEAR_INTERVAL * i) for i in range(steps)]
    if steps == 1:
        return [float(low)]
    if function == "arithmetic":
        # Gaps grow by the same amount each time, ending at high.
        d = 2.0 * (high - low) / (steps * (steps - 1))
        return [low + (i - 1) * i * d / 2 for i in range(1, steps + 1)]
    # geometric and exponential: each delay a constant factor of the last.
    k = math.pow(high / low, 1.0 / (steps - 1))
    if function == "geometric":
        return [low * math.pow(k, i) for i in range(steps)]
    return [low / k * math.pow(k, i + 1) for i in range(steps)]


def schedule(policy: Mapping[str, Any]) -> list[float]:
    """
    The delay before each retry after a failed first attempt, in order;
    when they are used up the delivery is given up.
    """
    policy = {**DEFAULT_POLICY, **policy}
    low, high = _delays(policy)
    return (
        [0.0] * policy["retries_with_no_delay"]
        + [float(low)] * policy["minimum_delay_retries"]
        + backoff(policy["retry_backoff_function"], low, high)
        + [float(high)] * policy["maximum_delay_retries"]
    )


def checkSubscriber(value: Any, types: tuple, allowPrivate: bool = False) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidBody('"subscriber" must be a URL (http, https or mailto).')
    if len(value) > 2048:
        raise ValidationFailed('"subscriber" may be at most 2048 characters long.')
    if hasControl(value):
        raise ValidationFailed('"subscriber" may not hold control characters.')
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValidationFailed('"subscriber" is not a URL.') from None
    if parts.scheme not in types:
        raise ValidationFailed(
            f"The subscriber type of subscription must be one of {', '.join(types)}."
        )
    if parts.scheme == "mailto":
        address = parts.path
        if address.count("@") != 1 or not all(address.split("@")) or " " in address:
            raise ValidationFailed("A mailto: subscriber must name one address.")
    elif not parts.hostname:
        raise ValidationFailed("A webhook subscriber must name a host.")
    elif not allowPrivate and _literalPrivate(parts.hostname):
        raise ValidationFailed(
            "A webhook subscriber may not be a loopback, link-local, private, "
            "unspecified or multicast address."
        )
    return value


def _literalPrivate(host: str) -> bool:
    try:
        return privateAddress(host)
    except ValueError:
        # A name: checked when it is resolved, at each delivery.
        return False


def _controlled(value: Any) -> bool:
    """
    Whether any string in C{value} (or its keys) holds a control character.
    """
    if isinstance(value, str):
        return hasControl(value)
    if isinstance(value, dict):
        return any(_controlled(k) or _controlled(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_controlled(v) for v in value)
    return False


def checkOptions(value: Any) -> dict:
    if not isinstance(value, dict):
        raise InvalidBody('"options" must be a JSON object.')
    if RETRY_POLICY in value:
        checkRetryPolicy(value[RETRY_POLICY])
    if "from" in value:
        raise ValidationFailed(
            "options.from is not accepted: mails are sent from the node's smtp_from."
        )
    for name in ("post_data", "subject"):
        if name in value and not isinstance(value[name], str):
            raise ValidationFailed(f"options.{name} must be a string.")
    # The webhook body template alone may span lines.
    rest = {k: v for k, v in value.items() if k != "post_data"}
    if _controlled(rest):
        raise ValidationFailed("options may not hold control characters.")
    headers = value.get("post_headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k.isascii() and v.isascii()
        for k, v in headers.items()
    ):
        raise ValidationFailed(
            "options.post_headers must map header names to ASCII text."
        )
    forbidden = sorted(
        k
        for k in headers
        if k.lower() in FORBIDDEN_HEADERS or k.lower().startswith("x-marconi-")
    )
    if forbidden:
        raise ValidationFailed(
            f"options.post_headers may not set {', '.join(forbidden)} (nor Host, "
            "Content-Length, Transfer-Encoding, Connection or X-Marconi-*)."
        )
    return value


def checkTTL(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidBody('"ttl" must be an integer.')
    if not MIN_TTL <= value <= MAX_TTL:
        raise ValidationFailed(
            f"The TTL of a subscription must be between {MIN_TTL} and {MAX_TTL} "
            "seconds."
        )
    return value


def checkDocument(
    document: Any, types: tuple, creating: bool, allowPrivate: bool = False
) -> dict:
    """
    Check a subscription's creation (C{creating}) or patch document.

    @return: the fields given, checked.
    """
    if not isinstance(document, dict):
        raise InvalidBody("The body must be a JSON object.")
    unknown = sorted(set(document) - set(FIELDS))
    if unknown:
        raise ValidationFailed(
            f"Unknown field(s) {', '.join(unknown)}: a subscription has "
            f"{', '.join(FIELDS)}."
        )
    if creating and "subscriber" not in document:
        raise InvalidBody("Missing parameter subscriber in body.")
    if not creating and not document:
        raise ValidationFailed("No subscription to update.")
    checked: dict = {}
    if "subscriber" in document:
        checked["subscriber"] = checkSubscriber(
            document["subscriber"], types, allowPrivate
        )
    if "ttl" in document:
        checked["ttl"] = checkTTL(document["ttl"])
    if "options" in document:
        checked["options"] = checkOptions(document["options"])
    return checked
