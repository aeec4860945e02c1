"""Real Consul for tests: a single server on free loopback ports, and a 3-server cluster in lab hosts.

Every agent sets ``disable_update_check = true`` and binds only to loopback or
a lab address. Agents are killed at teardown (and die with the test process).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.lab import procs
from tests.lab.netns import Host, Lab

CONSUL_VERSION = "1.8.7"


def consul_version(binary: str) -> str:
    """``X.Y.Z`` from ``consul version`` ("Consul v1.8.7" on its first line); "" when it does not say."""
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    first = out.splitlines()[0] if out else ""
    return first.split(" v", 1)[1].split()[0] if first.startswith("Consul v") else ""


_checked: dict[str, str] = {}


def consul_path() -> str | None:
    """The Consul 1.8.7 binary on PATH (or /usr/local/bin); None when there is no consul at all.

    Raises when the only consul found is another version: the lab's figures and the
    product's checks are for the release the team checked (DESIGN: Debian bullseye's 1.8.7).
    """
    candidates = [shutil.which("consul"), "/usr/local/bin/consul"]
    found = [c for c in dict.fromkeys(candidates) if c and os.access(c, os.X_OK)]
    for binary in found:
        if binary not in _checked:
            _checked[binary] = consul_version(binary)
        if _checked[binary] == CONSUL_VERSION:
            return binary
    if found:
        seen = ", ".join(f"{b} is {_checked[b] or 'unknown'}" for b in found)
        raise RuntimeError(f"the test lab needs Consul {CONSUL_VERSION} ({seen}): run scripts/install-consul.sh")
    return None


def http_get(url: str, *, token: str | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    """A plain GET (status, body); status 0 when the agent cannot be reached."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("X-Consul-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def port_free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


PORT_LOCKS = Path(tempfile.gettempdir()) / "foundation-test-ports"
_held_ports: list[int] = []  # open lock files: this process keeps its ports for as long as it runs


def reserve_port(port: int) -> bool:
    """Claim ``port`` for this process (an flock other test processes respect), if nobody holds it."""
    import fcntl

    PORT_LOCKS.mkdir(exist_ok=True)
    fd = os.open(PORT_LOCKS / str(port), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _held_ports.append(fd)
    return True


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports in 20000–29999 free for TCP and UDP on loopback right now, and reserved
    for this process: two test workers picking at random between "is it free?" and the agent's bind
    once took the same port ("address already in use")."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 29999)
        if port not in ports and port_free(port) and reserve_port(port):
            ports.append(port)
    return ports


class ConsulAgent:
    """A real single-server Consul agent on loopback.

    ``http_addr`` ("http://127.0.0.1:PORT"), ``env`` (this process's
    environment with ``CONSUL_HTTP_ADDR`` set and no token), ``token`` (the
    ACL master token when started with ``acl=True``), :meth:`stop`.
    """

    def __init__(self, *, acl: bool = False, token: str | None = None, base_dir: str | os.PathLike | None = None):
        self.acl = acl
        self.token = token or (os.urandom(16).hex() if acl else None)
        self._own_dir = base_dir is None
        self.dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="foundation-consul-"))
        self.proc: subprocess.Popen | None = None
        self.http_port = 0
        self.http_addr = ""
        self.env: dict[str, str] = {}
        procs.register(self)

    def __repr__(self) -> str:
        return f"<ConsulAgent {self.http_addr} acl={self.acl}>"

    def _config(self, ports: list[int]) -> dict:
        http, serf_lan, serf_wan, server = ports
        config: dict = {
            "server": True,
            "bootstrap_expect": 1,
            "node_name": f"test-{http}",
            "datacenter": "dc1",
            "data_dir": str(self.dir / "data"),
            "bind_addr": "127.0.0.1",
            "advertise_addr": "127.0.0.1",
            "client_addr": "127.0.0.1",
            "ports": {
                "http": http,
                "serf_lan": serf_lan,
                "serf_wan": serf_wan,
                "server": server,
                "dns": -1,
                "grpc": -1,
            },
            "disable_update_check": True,
            "disable_host_node_id": True,
            "log_level": "warn",
            "performance": {"raft_multiplier": 1},
            "enable_script_checks": False,
        }
        if self.acl:
            config["primary_datacenter"] = "dc1"
            config["acl"] = {
                "enabled": True,
                "default_policy": "deny",
                "down_policy": "extend-cache",
                "tokens": {"master": self.token},
            }
        return config

    def start(self, *, timeout: float = 30.0) -> ConsulAgent:
        binary = consul_path()
        if not binary:
            raise RuntimeError("consul is not installed: run scripts/install-consul.sh")
        last_error = ""
        for _attempt in range(4):
            shutil.rmtree(self.dir / "data", ignore_errors=True)
            self.dir.mkdir(parents=True, exist_ok=True)
            ports = free_ports(4)
            (self.dir / "config.json").write_text(json.dumps(self._config(ports), indent=2))
            log = open(self.dir / "consul.log", "wb")  # noqa: SIM115 - handed to the child
            try:
                self.proc = subprocess.Popen(
                    [binary, "agent", f"-config-file={self.dir / 'config.json'}"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=procs.die_with_parent,
                    env={k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")},
                )
            finally:
                log.close()
            self.http_port = ports[0]
            self.http_addr = f"http://127.0.0.1:{self.http_port}"
            env = {k: v for k, v in os.environ.items() if k not in ("CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE")}
            env["CONSUL_HTTP_ADDR"] = self.http_addr
            self.env = env
            try:
                self.wait_ready(timeout=timeout)
                return self
            except RuntimeError as exc:
                last_error = str(exc)
                procs.stop_process(self.proc)
                if "address already in use" not in self.log().lower():
                    break
        self.close()
        raise RuntimeError(f"consul agent did not start: {last_error}")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "consul.log").read_text(errors="replace")
        return ""

    def wait_ready(self, *, timeout: float = 30.0) -> None:
        """Until a leader is elected, the agent's node is in the catalog (its first anti-entropy sync:
        a test reading node names right after start saw none) and, with ACLs, the master token works."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"consul exited ({self.proc.returncode}): {self.log()[-1500:]}")
            status, body = http_get(self.http_addr + "/v1/status/leader", token=self.token)
            if status == 200 and body.strip() not in (b"", b'""'):
                status, nodes = http_get(self.http_addr + "/v1/catalog/nodes", token=self.token)
                if status == 200 and json.loads(nodes or b"[]"):
                    if not self.acl:
                        return
                    status, _ = http_get(self.http_addr + "/v1/acl/token/self", token=self.token)
                    if status == 200:
                        return
            time.sleep(0.05)
        raise RuntimeError(f"consul at {self.http_addr} had no leader after {timeout:.0f}s: {self.log()[-1500:]}")

    def kv_get(self, key: str) -> bytes | None:
        """A key's raw value straight from the HTTP API (None when absent)."""
        status, body = http_get(f"{self.http_addr}/v1/kv/{key}?raw", token=self.token)
        if status == 404:
            return None
        if status != 200:
            raise RuntimeError(f"GET /v1/kv/{key}: {status} {body[:200]!r}")
        return body

    def kv_dump(self, prefix: str = "") -> dict[str, bytes]:
        """Every key (under ``prefix``) and its value: compare states in dry-run replay tests."""
        import base64

        status, body = http_get(f"{self.http_addr}/v1/kv/{prefix}?recurse", token=self.token)
        if status == 404:
            return {}
        if status != 200:
            raise RuntimeError(f"GET /v1/kv/{prefix}?recurse: {status} {body[:200]!r}")
        return {e["Key"]: base64.b64decode(e["Value"]) if e.get("Value") else b"" for e in json.loads(body)}

    def stop(self) -> None:
        """Kill the agent (its data is thrown away)."""
        procs.stop_process(self.proc)

    def close(self) -> None:
        self.stop()
        procs.unregister(self)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def start_agent(*, acl: bool = False, token: str | None = None, base_dir=None, timeout: float = 30.0) -> ConsulAgent:
    """Start a single-server agent on free loopback ports and wait for its leader."""
    return ConsulAgent(acl=acl, token=token, base_dir=base_dir).start(timeout=timeout)


class ConsulCluster:
    """A real Consul cluster: 3 servers on lab hosts 0–2; host 3 (``spare``) can join as a client.

    ``lab``, ``hosts`` (the servers), ``http_addrs``, :meth:`wait_leader`,
    :meth:`start_client` / :meth:`stop_client` (the 4th node), :meth:`start_server`
    (restart one after a crash).
    """

    CONFIG_PATH = "/etc/consul.d/lab.json"

    def __init__(self, lab: Lab, *, servers: int = 3, raft_multiplier: int = 1) -> None:
        if len(lab.hosts) < servers:
            raise ValueError(f"the lab has {len(lab.hosts)} hosts, the cluster needs {servers}")
        self.lab = lab
        self.hosts: list[Host] = lab.hosts[:servers]
        self.spare: Host | None = lab.hosts[servers] if len(lab.hosts) > servers else None
        self.raft_multiplier = raft_multiplier
        self.procs: dict[str, subprocess.Popen] = {}
        self.http_addrs = [f"http://{h.ip}:8500" for h in self.hosts]
        self.http_addr = self.http_addrs[0]

    def __repr__(self) -> str:
        return f"<ConsulCluster {[h.ip for h in self.hosts]} lab={self.lab!r}>"

    @property
    def env(self) -> dict[str, str]:
        """This process's environment pointed at the first server."""
        env = {k: v for k, v in os.environ.items() if k not in ("CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE")}
        env["CONSUL_HTTP_ADDR"] = self.http_addr
        return env

    def agent_config(self, host: Host, *, server: bool) -> dict:
        """The agent config written to ``/etc/consul.d/lab.json`` inside ``host``."""
        config: dict = {
            "server": server,
            "node_name": host.name if len({h.name for h in self.lab.hosts}) == len(self.lab.hosts) else host.netns,
            "datacenter": "dc1",
            "data_dir": "/var/lib/consul",
            "bind_addr": host.ip,
            "advertise_addr": host.ip,
            "client_addr": f"127.0.0.1 {host.ip}",
            "retry_join": [h.ip for h in self.hosts if h is not host],
            "retry_interval": "1s",
            "disable_update_check": True,
            "disable_host_node_id": True,
            "log_level": "info",
            "leave_on_terminate": False,
            "ports": {"grpc": -1},
            "performance": {"raft_multiplier": self.raft_multiplier},
        }
        if server:
            config["bootstrap_expect"] = len(self.hosts)
        return config

    def _start_agent(self, host: Host, *, server: bool) -> subprocess.Popen:
        binary = consul_path()
        if not binary:
            raise RuntimeError("consul is not installed: run scripts/install-consul.sh")
        host.write(self.CONFIG_PATH, json.dumps(self.agent_config(host, server=server), indent=2))
        host.path("/var/log").mkdir(parents=True, exist_ok=True)
        log = open(host.path("/var/log/consul.log"), "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = host.popen(
                [binary, "agent", f"-config-file={self.CONFIG_PATH}"], stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()
        self.procs[host.netns] = proc
        return proc

    def start(self, *, timeout: float = 60.0) -> ConsulCluster:
        for host in self.hosts:
            self._start_agent(host, server=True)
        self.wait_leader(timeout=timeout)
        return self

    def start_server(self, host: Host) -> subprocess.Popen:
        """(Re)start the server agent on ``host`` (e.g. after :meth:`Host.crash`), same data dir."""
        return self._start_agent(host, server=True)

    def start_client(self, host: Host | None = None, *, timeout: float = 30.0) -> Host:
        """Start a client agent on the spare (4th) host and wait until the servers list it alive."""
        host = host or self.spare
        if host is None:
            raise RuntimeError("this cluster's lab has no spare host (make it with 4 hosts)")
        self._start_agent(host, server=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.member_status().get(self.agent_config(host, server=False)["node_name"]) == 1:
                return host
            time.sleep(0.1)
        raise RuntimeError(f"client agent on {host.name} did not join within {timeout:.0f}s")

    def stop_client(self, host: Host | None = None) -> None:
        """Kill the client agent on the spare host (a node disappearing)."""
        host = host or self.spare
        if host is not None:
            host.crash()

    def member_status(self) -> dict[str, int]:
        """Node name → serf status (1 alive, 3 left, 4 failed), as the first reachable server sees it."""
        for addr in self.http_addrs:
            status, body = http_get(addr + "/v1/agent/members")
            if status == 200:
                return {m["Name"]: m["Status"] for m in json.loads(body)}
        return {}

    def leader(self) -> str:
        """The leader's server address as some reachable server reports it ("" when none)."""
        for addr in self.http_addrs:
            status, body = http_get(addr + "/v1/status/leader", timeout=1.0)
            if status == 200:
                value = json.loads(body or b'""')
                if value:
                    return value
        return ""

    def wait_leader(self, *, timeout: float = 60.0) -> str:
        """Until every running server agrees on a leader and KV answers; returns ``ip:port`` of it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = set()
            running = []
            for host, addr in zip(self.hosts, self.http_addrs, strict=True):
                proc = self.procs.get(host.netns)
                if proc is not None and proc.poll() is not None:
                    continue
                running.append(addr)
                status, body = http_get(addr + "/v1/status/leader", timeout=1.0)
                seen.add(json.loads(body or b'""') if status == 200 else "")
            if len(seen) == 1 and "" not in seen and running:
                status, _ = http_get(running[0] + "/v1/kv/foundation-lab-probe")
                if status in (200, 404):
                    return seen.pop()
            time.sleep(0.1)
        logs = {h.name: _tail(h.path("/var/log/consul.log")) for h in self.hosts}
        raise RuntimeError(f"no Consul leader after {timeout:.0f}s; logs: {logs}")

    def close(self) -> None:
        for proc in self.procs.values():
            procs.stop_process(proc, timeout=5)


def _tail(path: Path, n: int = 600) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:]
    return ""
