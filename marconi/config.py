"""
The configuration of a node: one immutable value built from the command
line and the INI file, passed to constructors.
"""

import configparser
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Mapping, Optional

from marconi.cluster.settings import ClusterConfig, ClusterConfigError
from marconi.cluster.settings import build as buildCluster
from marconi.core import audit
from marconi.core.durability import DURABLE, parseDurability
from marconi.core.encryption import KeyConfigError, KeyRing
from marconi.core.limits import Limits
from marconi.core.text import snakeToCamel

if TYPE_CHECKING:
    from marconi.cluster.mtls import ClusterTLS

DEFAULT_LISTEN = "tcp:8888:interface=127.0.0.1"
DEFAULT_STORAGE = "sqlite:marconi.sqlite3"


@dataclass(frozen=True)
class Config:
    """
    @ivar listen: Twisted server endpoint descriptions for the API.
    @ivar storage: the storage URI; its scheme picks the driver.
    @ivar durability: the default level of L{marconi.core.durability}.
    @ivar auth: the name of the auth driver.
    @ivar authSettings: the C{[auth:NAME]} section of the file.
    @ivar purgeInterval: seconds between purges of expired data.
    @ivar logging: the C{[logging]} section (its C{driver} and settings).
    @ivar monitoring: the C{[monitoring]} section.
    @ivar audit: the C{[audit]} section (see L{marconi.core.audit}).
    @ivar cluster: the cluster this node belongs to, or L{None} for a node
        on its own.
    @ivar clusterTLS: the L{marconi.cluster.mtls.ClusterTLS} settings when
        the nodes speak mutual TLS, else L{None}.
    @ivar encryption: the keys of encrypted queues (C{[encryption]}), or
        L{None}.
    @ivar signedURLKey: the secret of pre-signed URLs (C{[signed_url]
        secret_key}), or L{None}: then none are made or accepted.
    @ivar extensions: the names of the enabled extensions (C{[extensions]
        enabled}; see L{marconi.extensions}).
    @ivar extensionSettings: each extension's C{[extension:NAME]} section,
        by name.
    """

    listen: tuple = (DEFAULT_LISTEN,)
    storage: str = DEFAULT_STORAGE
    durability: str = DURABLE
    auth: str = "noauth"
    authSettings: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    purgeInterval: float = 60.0
    logging: Mapping[str, str] = field(default_factory=dict)
    monitoring: Mapping[str, str] = field(default_factory=dict)
    audit: Mapping[str, str] = field(default_factory=dict)
    cluster: Optional[ClusterConfig] = None
    clusterTLS: Optional["ClusterTLS"] = None
    encryption: Optional[KeyRing] = None
    signedURLKey: Optional[str] = None
    extensions: tuple = ()
    extensionSettings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


class ConfigError(ValueError):
    """
    The configuration file is wrong; the message says where.
    """


def _multi(value: str) -> tuple:
    return tuple(line.strip() for line in value.splitlines() if line.strip())


def load(path: Optional[str], overrides: Mapping[str, object]) -> Config:
    """
    Build a L{Config} from an INI file (if any) and command-line overrides,
    which win over the file.

    The file's C{[marconi]} section holds C{listen} (one description per
    line), C{storage}, C{auth} and C{purge_interval}; C{[storage]} holds
    C{durability} (C{fast}, C{durable} or C{replicated}); C{[limits]} holds any
    field of L{Limits} in snake_case; C{[auth:NAME]} holds the settings of
    auth driver NAME; C{[signed_url]} holds C{secret_key}, the secret of
    pre-signed URLs; C{[logging]} and C{[monitoring]} the settings of
    the logging and monitoring drivers (checked by the drivers);
    C{[cluster]} holds C{node_name}, C{nodes} (one C{NAME=URL} per line,
    optionally followed by C{weight=W}), C{stores} (one C{NAME=URI} per
    line or separated by spaces), C{secret_file}, C{ring} and the
    timing settings of
    L{marconi.cluster.settings.TUNABLES}.

    The overrides C{node_name}, C{cluster_nodes} and C{cluster_secret_file}
    replace the file's cluster settings of the same meaning.
    """
    config = Config()
    overrides = dict(overrides)
    clusterOverrides = {
        key: overrides.pop(key, None)
        for key in (
            "node_name",
            "cluster_nodes",
            "cluster_secret_file",
            "cluster_ca",
            "node_cert",
            "node_key",
            "cluster_listen",
            "cluster_ring",
            "cluster_stores",
        )
    }
    clusterFile: dict = {}
    if path is not None:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as f:
                parser.read_file(f)
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from None
        except configparser.Error as e:
            raise ConfigError(f"{path}: {e}".replace("\n", " ")) from None
        auth = overrides.get("auth")
        config = _fromParser(
            parser, path, config, auth if isinstance(auth, str) else None
        )
        if parser.has_section("cluster"):
            clusterFile = dict(parser["cluster"])
    config = _cluster(config, clusterFile, clusterOverrides, path)
    values = {k: v for k, v in overrides.items() if v}
    if "listen" in values:
        values["listen"] = tuple(values["listen"])  # type: ignore[arg-type]
    return replace(config, **values)  # type: ignore[arg-type]


def _fromParser(
    parser: configparser.ConfigParser,
    path: str,
    config: Config,
    authOverride: Optional[str] = None,
) -> Config:
    known = {"listen", "storage", "auth", "purge_interval"}
    values: dict = {}
    if parser.has_section("marconi"):
        section = parser["marconi"]
        unknown = set(section) - known
        if unknown:
            raise ConfigError(
                f"{path}: unknown setting(s) in [marconi]: {', '.join(sorted(unknown))}"
            )
        if "listen" in section:
            values["listen"] = _multi(section["listen"])
        if "storage" in section:
            values["storage"] = section["storage"].strip()
        if "auth" in section:
            values["auth"] = section["auth"].strip()
        if "purge_interval" in section:
            try:
                values["purgeInterval"] = float(section["purge_interval"])
            except ValueError:
                raise ConfigError(f"{path}: purge_interval must be a number") from None
            if values["purgeInterval"] <= 0:
                raise ConfigError(f"{path}: purge_interval must be positive")
    if parser.has_section("storage"):
        storage = dict(parser["storage"])
        unknown = set(storage) - {"durability"}
        if unknown:
            raise ConfigError(
                f"{path}: unknown setting(s) in [storage]: {', '.join(sorted(unknown))}"
            )
        try:
            values["durability"] = parseDurability(storage.get("durability", DURABLE))
        except ValueError as e:
            raise ConfigError(f"{path}: [storage] {e}") from None
    if parser.has_section("encryption"):
        values["encryption"] = _encryption(dict(parser["encryption"]), path)
    if parser.has_section("limits"):
        # Compared without case so that acronyms (min_claim_ttl,
        # max_json_depth) find minClaimTTL and maxJSONDepth.
        limitFields = {f.name.lower(): f.name for f in fields(Limits)}
        limits = {}
        for key, raw in parser["limits"].items():
            name = limitFields.get(snakeToCamel(key).lower())
            if name is None:
                raise ConfigError(f"{path}: unknown limit {key!r}")
            try:
                limits[name] = int(raw)
            except ValueError:
                raise ConfigError(f"{path}: limit {key} must be an integer") from None
            if limits[name] < 0:
                raise ConfigError(f"{path}: limit {key} must not be negative")
        values["limits"] = replace(config.limits, **limits)
    if parser.has_section("signed_url"):
        values["signedURLKey"] = _signedURLKey(dict(parser["signed_url"]), path)
    for name in ("logging", "monitoring", "audit"):
        if parser.has_section(name):
            values[name] = {k: v.strip() for k, v in parser[name].items()}
    _checkAudit(values.get("audit", {}), path)
    values.update(_extensions(parser, path))
    # The driver named on the command line reads its own section.
    auth = authOverride or values.get("auth", config.auth)
    # Its section is [auth:NAME]; [NAME] is accepted too (so [keystone]),
    # but not both.
    sections = [s for s in (f"auth:{auth}", auth) if parser.has_section(s)]
    if len(sections) > 1:
        raise ConfigError(
            f"{path}: the settings of the {auth} auth driver are in both "
            f"[auth:{auth}] and [{auth}]; keep one"
        )
    if sections:
        values["authSettings"] = dict(parser[sections[0]])
    return replace(config, **values)


def _encryption(section: dict, path: str) -> KeyRing:
    """
    The C{[encryption]} section: C{keys} (C{ID:BASE64KEY} items) and an
    optional C{current} key id.
    """
    unknown = set(section) - {"keys", "current"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) in [encryption]: {', '.join(sorted(unknown))}"
        )
    try:
        return KeyRing.parse(
            section.get("keys", ""), section.get("current", "").strip() or None
        )
    except KeyConfigError as e:
        raise ConfigError(f"{path}: [encryption] {e}") from None


def _signedURLKey(section: dict, path: str) -> str:
    """
    The C{[signed_url]} section's C{secret_key}, Zaqar's name for it.
    """
    unknown = set(section) - {"secret_key"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) in [signed_url]: {', '.join(sorted(unknown))}"
        )
    key = section.get("secret_key", "").strip()
    if not key:
        raise ConfigError(f"{path}: [signed_url] secret_key must not be empty")
    return key


def _extensions(parser: configparser.ConfigParser, path: str) -> dict:
    """
    The C{[extensions]} section and the C{[extension:NAME]} sections,
    checked by the extensions' plugins without importing their code.
    """
    from marconi import extensions

    section = dict(parser["extensions"]) if parser.has_section("extensions") else {}
    unknown = set(section) - {"enabled"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) in [extensions]: {', '.join(sorted(unknown))}"
        )
    known = extensions.available()
    try:
        enabled = extensions.parseEnabled(section.get("enabled", ""), known)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    settings = {}
    for name in parser.sections():
        if not name.startswith("extension:"):
            continue
        extension = name[len("extension:") :]
        if extension not in known:
            raise ConfigError(f"{path}: [{name}] names no known extension")
        settings[extension] = {k: v.strip() for k, v in parser[name].items()}
    for extension in enabled:
        try:
            known[extension].checkSettings(settings.get(extension, {}))
        except ValueError as e:
            raise ConfigError(f"{path}: [extension:{extension}] {e}") from None
    if not (enabled or settings):
        return {}
    return {"extensions": enabled, "extensionSettings": settings}


def _checkAudit(section: Mapping[str, str], path: Optional[str]) -> None:
    """
    Refuse a wrong C{[audit]} section when the file is read.
    """
    try:
        audit.parseSettings(section)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None


def _cluster(
    config: Config, section: dict, overrides: Mapping, path: Optional[str]
) -> Config:
    section = dict(section)
    if overrides.get("cluster_ring"):
        section["ring"] = overrides["cluster_ring"]
    nodeName = overrides.get("node_name") or section.pop("node_name", "").strip()
    section.pop("node_name", None)
    nodes = overrides.get("cluster_nodes") or _multi(section.pop("nodes", ""))
    section.pop("nodes", None)
    stores = overrides.get("cluster_stores") or section.pop("stores", "").split()
    section.pop("stores", None)
    secretFile = (
        overrides.get("cluster_secret_file") or section.pop("secret_file", "").strip()
    )
    section.pop("secret_file", None)
    mutual = {
        option: overrides.get(option) or section.pop(key, "").strip() or None
        for option, key in (
            ("cluster_ca", "ca"),
            ("node_cert", "node_cert"),
            ("node_key", "node_key"),
            ("cluster_listen", "listen"),
        )
    }
    for key in ("ca", "node_cert", "node_key", "listen"):
        section.pop(key, None)
    try:
        cluster = buildCluster(
            nodeName or None, nodes, secretFile or None, section, stores
        )
        from marconi.cluster import mtls

        clusterTLS = mtls.build(
            cluster,
            mutual["cluster_ca"],
            mutual["node_cert"],
            mutual["node_key"],
            mutual["cluster_listen"],
        )
    except ClusterConfigError as e:
        raise ConfigError(str(e)) from None
    return replace(config, cluster=cluster, clusterTLS=clusterTLS)
