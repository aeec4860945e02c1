"""``foundation.yaml``: the cluster configuration and its three modes.

- **mortal**: no file. Hosts come from discovery; none found → a local one-node cluster.
- **apprentice**: a few keys: ``hosts``, ``ssh``, ``servers``, ``datacenter``.
- **wizard**: everything else too: per-host overrides, raw ``consul:`` agent
  config merged verbatim over ours, ``ports``, ``acl``/``tls`` file paths,
  ``agent`` settings, ``cluster.strategy`` / ``cluster.auto_join``.

The mode is what the file uses (or an explicit ``mode:`` key). Validation
walks the YAML node tree so every error names its place precisely:
``foundation.yaml:12:5: servers must be an odd number ≥ 1, got 2``.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from foundation_cli.errors import ConfigError

FILE_NAME = "foundation.yaml"
MODES = ("mortal", "apprentice", "wizard")
APPRENTICE_KEYS = {"mode", "hosts", "ssh", "servers", "datacenter"}
APPRENTICE_HOST_KEYS = {"address", "user", "port", "proxy_jump"}
STRATEGIES = ("static", "mdns", "dns", "consul")
DEFAULT_PORTS = {"http": 8500, "server": 8300, "serf_lan": 8301, "serf_wan": 8302, "dns": -1, "grpc": -1}
_DC_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
_NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
_LOG_LEVELS = ("trace", "debug", "info", "warn", "error")
_YAML_HINT = "look at that line and the one before it: a missing `:` or space after it, a tab, or an indentation that does not line up (`foundation init` writes a valid starter)"


@dataclass
class HostConfig:
    """One machine from ``hosts:`` (a name/address string, or a mapping with overrides)."""

    address: str
    user: str | None = None
    port: int | None = None
    role: str | None = None  # server | client | None (decided by `servers`)
    node_name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # Consul node meta (start-* --node-meta K=V)
    install_root: str | None = None
    python: str | None = None
    identity_file: str | None = None
    proxy_jump: str | None = None  # [user@]bastion[:port]: SSH to this host through that one


@dataclass
class SSHSettings:
    user: str | None = None
    identity_file: str | None = None
    port: int | None = None
    known_hosts: str | None = None
    config_file: str | None = None
    connect_timeout: float = 10.0
    accept_new_host_keys: bool = False
    proxy_jump: str | None = None  # default bastion for hosts ~/.ssh/config gives no ProxyJump
    sudo_password_env: str | None = None  # name of an environment variable holding the sudo password
    sudo_password_file: str | None = None  # a file whose first line is the sudo password


@dataclass
class ACLSettings:
    enabled: bool = True  # secure by default: deny-by-default ACLs bootstrapped by `up` (docs/security.md)
    default_policy: str = "deny"
    token_file: str | None = None  # operator/management token (file on the operator's machine)


@dataclass
class TLSSettings:
    enabled: bool = True  # `up` makes a CA and certificates with `consul tls` unless the three files are given
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True


@dataclass
class AgentSettings:
    log_level: str = "info"
    install_root: str = "/opt/foundation"
    python: str = "python3"
    env: dict[str, str] = field(default_factory=dict)
    wheelhouse: str | None = None  # the agent's dependency wheels for hosts' Pythons (air-gapped sites)


@dataclass
class StrategySettings:
    """``cluster:``; the discovery strategies (issue 7) read ``strategy``, ``auto_join`` and ``options``."""

    strategy: str | None = None  # None: mdns in mortal mode, static otherwise
    auto_join: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClusterConfig:
    """The resolved configuration, whatever mode produced it."""

    mode: str = "mortal"
    source: str | None = None
    hosts: list[HostConfig] = field(default_factory=list)
    ssh: SSHSettings = field(default_factory=SSHSettings)
    servers: int | None = None
    datacenter: str = "dc1"
    consul: dict[str, Any] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    acl: ACLSettings = field(default_factory=ACLSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    cluster: StrategySettings = field(default_factory=StrategySettings)
    consul_binary: str | None = None
    consul_binaries: dict[str, str] = field(default_factory=dict)  # per architecture: {amd64: PATH, arm64: PATH}

    @property
    def server_count(self) -> int:
        """How many Consul servers: explicit, else 3 with ≥ 3 hosts, else 1."""
        if self.servers:
            return self.servers
        return 3 if len(self.hosts) >= 3 else 1

    @property
    def strategy(self) -> str:
        return self.cluster.strategy or ("mdns" if self.mode == "mortal" and not self.hosts else "static")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for ``config show --effective``); secrets are masked by the renderer."""
        data = asdict(self)
        data["servers"] = self.server_count
        data["cluster"]["strategy"] = self.strategy
        return data


# --------------------------------------------------------------------------------------------
# Finding the file


def config_dir() -> Path:
    """The XDG config dir for Foundation (``$XDG_CONFIG_HOME/foundation``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "foundation"


def find_config_file(explicit: str | None = None, *, cwd: str | None = None) -> Path | None:
    """``--config`` if given (must exist), else ``./foundation.yaml``, else the XDG config dir's."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"{explicit}: no such file", hint="run `foundation init` to write a starter file")
        return path
    for candidate in (Path(cwd or os.getcwd()) / FILE_NAME, config_dir() / FILE_NAME):
        if candidate.is_file():
            return candidate
    return None


def load(explicit: str | None = None, *, cwd: str | None = None) -> ClusterConfig:
    """The effective configuration: the file found (validated), or mortal defaults."""
    path = find_config_file(explicit, cwd=cwd)
    if path is None:
        return ClusterConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    display = str(path) if explicit else (path.name if path.parent == Path(cwd or os.getcwd()) else str(path))
    return parse(text, source=display)


# --------------------------------------------------------------------------------------------
# Parsing with precise locations


class _Ctx:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node, message: str, hint: str | None = None):
        mark = node.start_mark if node is not None else None
        where = f"{self.source}:{mark.line + 1}:{mark.column + 1}" if mark else self.source
        raise ConfigError(f"{where}: {message}", hint=hint)


def _kind(node) -> str:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    value = _scalar_value(node)
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({node.value})"
    if isinstance(value, int):
        return f"a number ({node.value})"
    if isinstance(value, float):
        return f"a number ({node.value})"
    return f"a string ({node.value!r})"


def _scalar_value(node) -> Any:
    import yaml

    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _mapping(ctx: _Ctx, node, what: str) -> list[tuple[Any, Any]]:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        ctx.fail(node, f"{what} must be a mapping, got {_kind(node)}")
    seen: dict[str, Any] = {}
    pairs = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            ctx.fail(key_node, f"{what}: keys must be plain names")
        key = str(key_node.value)
        if key in seen:
            ctx.fail(key_node, f"{what}: duplicate key {key!r}")
        seen[key] = True
        pairs.append((key_node, value_node))
    return pairs


def _check_keys(ctx: _Ctx, pairs, allowed: set[str] | dict, what: str) -> None:
    for key_node, _ in pairs:
        if key_node.value not in allowed:
            near = _suggest(key_node.value, allowed)
            ctx.fail(
                key_node,
                f"unknown key {key_node.value!r} in {what}" + (f" (did you mean {near!r}?)" if near else ""),
                hint="allowed: " + ", ".join(sorted(allowed)),
            )


def _suggest(word: str, options) -> str | None:
    import difflib

    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return close[0] if close else None


def _str(ctx: _Ctx, node, what: str, *, allow_null: bool = False) -> str | None:
    import yaml

    value = _scalar_value(node) if isinstance(node, yaml.ScalarNode) else object()
    if value is None and allow_null:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value is None:
        ctx.fail(node, f"{what} must be a string, got {_kind(node)}")
    text = str(value)
    if not text.strip():
        ctx.fail(node, f"{what} must not be empty")
    return text


def _int(ctx: _Ctx, node, what: str, lo: int, hi: int) -> int:
    import yaml

    value = _scalar_value(node) if isinstance(node, yaml.ScalarNode) else None
    if isinstance(value, bool) or not isinstance(value, int):
        ctx.fail(node, f"{what} must be a whole number, got {_kind(node)}")
    if not lo <= value <= hi:
        ctx.fail(node, f"{what} must be between {lo} and {hi}, got {value}")
    return value


def _bool(ctx: _Ctx, node, what: str) -> bool:
    import yaml

    value = _scalar_value(node) if isinstance(node, yaml.ScalarNode) else None
    if not isinstance(value, bool):
        ctx.fail(node, f"{what} must be true or false, got {_kind(node)}")
    return value


def _port(ctx: _Ctx, node, what: str) -> int:
    return _int(ctx, node, what, 1, 65535)


def parse(text: str, *, source: str = FILE_NAME) -> ClusterConfig:
    """Validate and resolve the text of a ``foundation.yaml``; :class:`ConfigError` names the place."""
    import yaml

    try:
        return _parse(text, source=source)
    except yaml.MarkedYAMLError as exc:  # a scalar no YAML type fits (``=``, an unknown ``!!tag``), found late
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = (exc.problem or exc.context or "invalid YAML").split(" for the tag")[0]
        raise ConfigError(f"{where}: invalid YAML value: {problem}", hint=_YAML_HINT) from None


def _parse(text: str, *, source: str) -> ClusterConfig:
    import yaml

    ctx = _Ctx(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{where}: invalid YAML: {problem}", hint=_YAML_HINT) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}", hint=_YAML_HINT) from None
    cfg = ClusterConfig(source=source)
    if root is None or (isinstance(root, yaml.ScalarNode) and _scalar_value(root) is None):
        cfg.mode = "mortal"
        return cfg
    pairs = _mapping(ctx, root, "the top level")
    allowed = {
        "mode",
        "hosts",
        "ssh",
        "servers",
        "datacenter",
        "consul",
        "ports",
        "acl",
        "tls",
        "agent",
        "cluster",
        "consul_binary",
    }
    _check_keys(ctx, pairs, allowed, "foundation.yaml")
    wizard_used: list[str] = []
    explicit_mode: str | None = None
    servers_node = None
    for key_node, node in pairs:
        key = key_node.value
        if key not in APPRENTICE_KEYS:
            wizard_used.append(key)
        if key == "mode":
            explicit_mode = _str(ctx, node, "mode")
            if explicit_mode not in MODES:
                ctx.fail(node, f"mode must be one of {', '.join(MODES)}, got {explicit_mode!r}")
            mode_node = node
        elif key == "hosts":
            cfg.hosts = _hosts(ctx, node, wizard_used)
        elif key == "ssh":
            cfg.ssh = _ssh(ctx, node)
        elif key == "servers":
            servers_node = node
            n = _int(ctx, node, "servers", 0, 99)
            if n < 1 or n % 2 == 0:
                ctx.fail(node, f"servers must be an odd number ≥ 1, got {n}", hint="1, 3 or 5 servers")
            cfg.servers = n
        elif key == "datacenter":
            dc = _str(ctx, node, "datacenter")
            if not _DC_RE.match(dc):
                ctx.fail(node, f"datacenter must be lowercase letters, digits, '-' or '_', got {dc!r}")
            cfg.datacenter = dc
        elif key == "consul":
            _mapping(ctx, node, "consul")
            cfg.consul = _plain(node)
            for forbidden in ("encrypt",):
                if forbidden in cfg.consul:
                    from foundation_cli.raw import secrets

                    secrets.register(str(cfg.consul[forbidden]))
        elif key == "ports":
            cfg.ports = _ports(ctx, node)
        elif key == "acl":
            cfg.acl = _acl(ctx, node)
        elif key == "tls":
            cfg.tls = _tls(ctx, node)
        elif key == "agent":
            cfg.agent = _agent(ctx, node)
        elif key == "cluster":
            cfg.cluster = _cluster(ctx, node)
        elif key == "consul_binary":
            cfg.consul_binary, cfg.consul_binaries = _consul_binary(ctx, node)
    names = [h.node_name for h in cfg.hosts if h.node_name]
    if len(set(names)) != len(names):
        ctx.fail(root, "hosts: node names must be unique")
    addresses = [h.address for h in cfg.hosts]
    dup = next((a for a in addresses if addresses.count(a) > 1), None)
    if dup:
        ctx.fail(root, f"hosts: {dup!r} is listed twice")
    if cfg.servers and cfg.hosts:
        pinned = [h for h in cfg.hosts if h.role == "server"]
        if cfg.servers > len(cfg.hosts):
            ctx.fail(servers_node, f"servers is {cfg.servers} but only {len(cfg.hosts)} hosts are listed")
        if len(pinned) > cfg.servers:
            ctx.fail(servers_node, f"servers is {cfg.servers} but {len(pinned)} hosts have role: server")
    detected = "wizard" if wizard_used else ("apprentice" if cfg.hosts or len(pairs) > 0 else "mortal")
    if explicit_mode:
        if explicit_mode != "wizard" and wizard_used:
            ctx.fail(
                mode_node,
                f"mode is {explicit_mode} but the file uses wizard settings ({', '.join(sorted(set(wizard_used)))})",
                hint="set mode: wizard, or remove those settings",
            )
        cfg.mode = explicit_mode
    else:
        cfg.mode = detected
    return cfg


def _plain(node) -> Any:
    return _scalar_value(node)


def _hosts(ctx: _Ctx, node, wizard_used: list[str]) -> list[HostConfig]:
    import yaml

    if not isinstance(node, yaml.SequenceNode):
        ctx.fail(node, f"hosts must be a list of names or addresses, got {_kind(node)}")
    hosts = []
    allowed = {f.name for f in HostConfig.__dataclass_fields__.values()}
    for item in node.value:
        if isinstance(item, yaml.ScalarNode):
            hosts.append(HostConfig(address=_str(ctx, item, "a host")))
            continue
        pairs = _mapping(ctx, item, "a host")
        _check_keys(ctx, pairs, allowed, "a host entry")
        values: dict[str, Any] = {}
        for key_node, value_node in pairs:
            key = key_node.value
            if key not in APPRENTICE_HOST_KEYS:
                wizard_used.append(f"hosts[].{key}")
            if key == "port":
                values[key] = _port(ctx, value_node, "host port")
            elif key == "role":
                role = _str(ctx, value_node, "role")
                if role not in ("server", "client"):
                    ctx.fail(value_node, f"role must be server or client, got {role!r}")
                values[key] = role
            elif key == "node_name":
                name = _str(ctx, value_node, "node_name")
                if not _NODE_RE.match(name):
                    ctx.fail(value_node, f"node_name must be a DNS label (letters, digits, '-'), got {name!r}")
                values[key] = name
            elif key == "labels":
                values[key] = _labels(ctx, value_node)
            elif key == "install_root":
                values[key] = _install_root(ctx, value_node, "install_root")
            else:
                values[key] = _str(ctx, value_node, key)
        if "address" not in values:
            ctx.fail(item, "a host entry needs an address", hint="hosts: [{address: 10.0.0.5, user: pi}]")
        hosts.append(HostConfig(**values))
    return hosts


_META_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_INSTALL_ROOT_RE = re.compile(r"^(?:/[A-Za-z0-9._+-]+)+$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _install_root(ctx: _Ctx, node, what: str) -> str:
    """An absolute directory on the hosts (it is removed by ``down --purge``): no '/', '..', spaces or controls."""
    path = _str(ctx, node, what) or ""
    if not _INSTALL_ROOT_RE.match(path) or any(seg in (".", "..") for seg in path.split("/")):
        ctx.fail(node, f"{what} must be an absolute path of letters, digits and . _ + - (not '/'), got {path!r}")
    return path.rstrip("/")


def _labels(ctx: _Ctx, node) -> dict[str, str]:
    """``labels: {usb: zigbee}``: the host's Consul node meta (keys as Consul allows them, values ≤ 512)."""
    import yaml

    out: dict[str, str] = {}
    for key_node, value_node in _mapping(ctx, node, "labels"):
        key = str(key_node.value)
        if not _META_KEY_RE.match(key) or key.startswith(("consul-", "foundation_")):
            ctx.fail(
                key_node,
                f"label {key!r}: letters, digits, '-' or '_' (at most 128), not starting with consul- or foundation_",
            )
        if not isinstance(value_node, yaml.ScalarNode) or _scalar_value(value_node) is None:
            ctx.fail(value_node, f"label {key}: the value must be a string, got {_kind(value_node)}")
        value = str(value_node.value)
        if len(value) > 512:
            ctx.fail(value_node, f"label {key}: the value is longer than 512 characters")
        out[key] = value
    if len(out) > 60:
        ctx.fail(node, "labels: at most 60 per host (Consul allows 64 node meta keys; Foundation uses some)")
    return out


def _ssh(ctx: _Ctx, node) -> SSHSettings:
    pairs = _mapping(ctx, node, "ssh")
    _check_keys(ctx, pairs, set(SSHSettings.__dataclass_fields__), "ssh")
    out = SSHSettings()
    for key_node, value_node in pairs:
        key = key_node.value
        if key == "port":
            out.port = _port(ctx, value_node, "ssh.port")
        elif key == "connect_timeout":
            out.connect_timeout = float(_int(ctx, value_node, "ssh.connect_timeout", 1, 600))
        elif key == "accept_new_host_keys":
            out.accept_new_host_keys = _bool(ctx, value_node, "ssh.accept_new_host_keys")
        else:
            setattr(out, key, _str(ctx, value_node, f"ssh.{key}"))
    return out


def _ports(ctx: _Ctx, node) -> dict[str, int]:
    pairs = _mapping(ctx, node, "ports")
    _check_keys(ctx, pairs, set(DEFAULT_PORTS), "ports")
    ports = dict(DEFAULT_PORTS)
    for key_node, value_node in pairs:
        key = key_node.value
        lo = -1 if key in ("dns", "grpc", "serf_wan") else 1
        value = _int(ctx, value_node, f"ports.{key}", lo, 65535)
        if value == 0:
            ctx.fail(value_node, f"ports.{key} must be a port number (or -1 to disable), got 0")
        ports[key] = value
    return ports


def _acl(ctx: _Ctx, node) -> ACLSettings:
    pairs = _mapping(ctx, node, "acl")
    _check_keys(ctx, pairs, set(ACLSettings.__dataclass_fields__), "acl")
    out = ACLSettings()
    for key_node, value_node in pairs:
        key = key_node.value
        if key == "enabled":
            out.enabled = _bool(ctx, value_node, "acl.enabled")
        elif key == "default_policy":
            policy = _str(ctx, value_node, "acl.default_policy")
            if policy not in ("allow", "deny"):
                ctx.fail(value_node, f"acl.default_policy must be allow or deny, got {policy!r}")
            out.default_policy = policy
        else:
            out.token_file = _str(ctx, value_node, "acl.token_file")
    return out


def _tls(ctx: _Ctx, node) -> TLSSettings:
    pairs = _mapping(ctx, node, "tls")
    _check_keys(ctx, pairs, set(TLSSettings.__dataclass_fields__), "tls")
    out = TLSSettings()
    for key_node, value_node in pairs:
        key = key_node.value
        if key == "verify":
            out.verify = _bool(ctx, value_node, "tls.verify")
        elif key == "enabled":
            out.enabled = _bool(ctx, value_node, "tls.enabled")
        else:
            setattr(out, key, _str(ctx, value_node, f"tls.{key}"))
    set_files = [k for k in ("ca_file", "cert_file", "key_file") if getattr(out, k)]
    if set_files and len(set_files) != 3:
        ctx.fail(node, "tls needs ca_file, cert_file and key_file together")
    return out


def _agent(ctx: _Ctx, node) -> AgentSettings:
    import yaml

    pairs = _mapping(ctx, node, "agent")
    _check_keys(ctx, pairs, set(AgentSettings.__dataclass_fields__), "agent")
    out = AgentSettings()
    for key_node, value_node in pairs:
        key = key_node.value
        if key == "log_level":
            level = _str(ctx, value_node, "agent.log_level").lower()
            if level not in _LOG_LEVELS:
                ctx.fail(value_node, f"agent.log_level must be one of {', '.join(_LOG_LEVELS)}, got {level!r}")
            out.log_level = level
        elif key == "env":
            env_pairs = _mapping(ctx, value_node, "agent.env")
            for k_node, v_node in env_pairs:
                if not isinstance(v_node, yaml.ScalarNode):
                    ctx.fail(v_node, f"agent.env.{k_node.value} must be a string, got {_kind(v_node)}")
                if not _ENV_KEY_RE.match(str(k_node.value)):
                    ctx.fail(k_node, f"agent.env: {str(k_node.value)!r} is not an environment variable name")
                if any(ord(c) < 0x20 or ord(c) == 0x7F for c in str(v_node.value)):
                    ctx.fail(v_node, f"agent.env.{k_node.value} must not hold control characters (newlines)")
                out.env[str(k_node.value)] = str(v_node.value)
        elif key == "install_root":
            out.install_root = _install_root(ctx, value_node, "agent.install_root")
        else:
            setattr(out, key, _str(ctx, value_node, f"agent.{key}"))
    return out


def _consul_binary(ctx: _Ctx, node) -> tuple[str | None, dict[str, str]]:
    """``consul_binary: PATH`` or one per architecture, ``{amd64: PATH, arm64: PATH}`` (see core/consul_binary.py)."""
    import platform

    import yaml

    from foundation_cli.core.consul_binary import ARCHES, debian_arch

    if isinstance(node, yaml.ScalarNode):
        return _str(ctx, node, "consul_binary"), {}
    known = sorted({a[0] for a in ARCHES.values()})
    per_arch: dict[str, str] = {}
    for key_node, value_node in _mapping(ctx, node, "consul_binary"):
        arch = debian_arch(str(key_node.value))
        if arch not in known:
            ctx.fail(key_node, f"consul_binary: unknown architecture {key_node.value!r} (one of {', '.join(known)})")
        per_arch[arch] = _str(ctx, value_node, f"consul_binary.{key_node.value}")
    return per_arch.get(debian_arch(platform.machine())), per_arch


def _cluster(ctx: _Ctx, node) -> StrategySettings:
    pairs = _mapping(ctx, node, "cluster")
    _check_keys(ctx, pairs, set(StrategySettings.__dataclass_fields__), "cluster")
    out = StrategySettings()
    for key_node, value_node in pairs:
        key = key_node.value
        if key == "strategy":
            strategy = _str(ctx, value_node, "cluster.strategy")
            if strategy not in STRATEGIES:
                ctx.fail(value_node, f"cluster.strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
            out.strategy = strategy
        elif key == "auto_join":
            out.auto_join = _bool(ctx, value_node, "cluster.auto_join")
        else:
            _mapping(ctx, value_node, "cluster.options")
            out.options = _plain(value_node)
    return out


def merge_consul(ours: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """Our generated agent config with the wizard's raw ``consul:`` merged over it (dicts deep, rest replaced)."""
    merged = copy.deepcopy(ours)
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_consul(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# --------------------------------------------------------------------------------------------
# Starter files (`foundation init`)

STARTERS = {
    "mortal": """\
# foundation.yaml — mortal mode: nothing to configure.
# With no hosts, `foundation up` discovers machines on the LAN (mDNS) and, if
# it finds none, builds a local one-node cluster (`foundation up --local`).
# Add `hosts:` below to switch to apprentice mode.
#
# datacenter: dc1
""",
    "apprentice": """\
# foundation.yaml — apprentice mode: a few keys, sensible defaults for the rest.
# `foundation config show --effective` prints what these resolve to.

# The machines to bootstrap over SSH (names from ~/.ssh/config, or addresses).
hosts:
  - 192.168.1.10
  - 192.168.1.11
  - address: 192.168.1.12
    user: pi          # per-host SSH user
    port: 22          # per-host SSH port

# SSH defaults for every host (~/.ssh/config and ssh-agent are honoured too).
ssh:
  user: root
  # identity_file: ~/.ssh/id_ed25519

# How many hosts run a Consul server (odd; default 3 with >= 3 hosts, else 1).
servers: 3

# The Consul datacenter name.
datacenter: dc1
""",
    "wizard": """\
# foundation.yaml — wizard mode: every knob. Delete what you do not need.
mode: wizard

hosts:
  - address: 10.0.0.10
    role: server              # server | client (default: first `servers` hosts are servers)
    node_name: rack1-a        # unique Consul node name (default: hostname, made unique)
  - address: 10.0.0.11
    role: server
  - address: 10.0.0.12
    role: server
  - address: 10.0.0.20
    user: admin
    port: 2222
    install_root: /opt/foundation
    python: python3

ssh:
  user: root
  # identity_file: ~/.ssh/id_ed25519
  # known_hosts: ~/.ssh/known_hosts
  # config_file: ~/.ssh/config
  connect_timeout: 10          # TCP connect only; on a LAN 1-2 answers a host that is down at once
  accept_new_host_keys: false

servers: 3
datacenter: dc1
# consul_binary: /usr/local/bin/consul   # uploaded to hosts without a suitable consul

# Consul agent ports (dns/grpc/serf_wan: -1 disables).
ports:
  http: 8500
  server: 8300
  serf_lan: 8301
  serf_wan: 8302
  dns: -1
  grpc: -1

# ACLs (on by default): `up` bootstraps them; the management token stays in the local
# state file (mode 0600), every node gets its own narrow tokens. See docs/security.md.
acl:
  enabled: true
  default_policy: deny
  # token_file: ~/.config/foundation/operator.token

# TLS (on by default): `up` makes a CA and certificates with `consul tls` in the state dir.
# Or bring your own (all three files, or none):
# tls:
#   ca_file: /etc/foundation/ca.pem
#   cert_file: /etc/foundation/server.pem
#   key_file: /etc/foundation/server-key.pem

# The Foundation node agent.
agent:
  log_level: info
  install_root: /opt/foundation
  python: python3
  env: {}

# How machines are found and joined (static | mdns | dns | consul).
cluster:
  strategy: static
  auto_join: false
  options: {}

# Raw Consul agent configuration, merged verbatim over Foundation's.
consul:
  log_level: INFO
  # performance: {raft_multiplier: 1}
""",
}


def starter(mode: str) -> str:
    """The commented starter file for ``mode`` (it parses to that mode)."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}", hint="one of: " + ", ".join(MODES))
    return STARTERS[mode]
