"""
Small conversions of configuration and query text, one of each for the
whole code base.
"""

import re

TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})


def parseBoolean(value: str) -> bool:
    """
    Read a boolean the way every Marconi setting and query parameter does:
    C{true}/C{yes}/C{on}/C{1} or C{false}/C{no}/C{off}/C{0}, in any case,
    surrounding white space ignored.

    @raise ValueError: if C{value} is none of those words.
    """
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false, not {value!r}")


def snakeToCamel(name: str) -> str:
    """
    C{max_messages_post_size} -> C{maxMessagesPostSize}.
    """
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
