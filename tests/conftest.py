"""Shared pytest fixtures: real Consul agents and the network-namespace test lab.

consul_bin          (session)  path of the consul binary; installs it with scripts/install-consul.sh if missing
consul_agent        (module)   a real single-server agent on free loopback ports (ConsulAgent)
fresh_consul        (function) the same, new for each test
consul_agent_acl    (function) the same with ACLs on, default deny; ``.token`` is the master token
make_lab            (function) factory: make_lab(n=3, same_hostname=False) -> Lab (SSH hosts in netns)
consul_cluster      (function) 3 Consul servers on lab hosts + a spare 4th host (ConsulCluster)
shared_consul_cluster (module) the same, shared by a module's tests (don't break it)

ConsulAgent: .http_addr "http://127.0.0.1:PORT", .env (os.environ + CONSUL_HTTP_ADDR, no token),
.token, .stop(), .kv_get(key), .kv_dump(prefix).
Lab: .hosts, .ssh_key, .known_hosts, .bridge, .bridge_ip, .ssh_argv(host, cmd), .ssh_client(host).
Host: .name .ip .netns .veth .sshd_pid .exec(cmd, check=True, timeout=30) .popen(argv, **kw)
.crash() .partition() .heal() .path(p) .write(p, content).
ConsulCluster: .lab .hosts .spare .http_addrs .http_addr .env .wait_leader() .leader()
.start_client() .stop_client() .start_server(host) .member_status().

Lab fixtures need root (network namespaces); tests using them are marked ``@pytest.mark.lab``.
The test session never talks to a Consul the developer runs: CONSUL_HTTP_* is removed from the
environment and FOUNDATION_STATE_DIR points at a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.lab import procs
from tests.lab.consul import ConsulAgent, ConsulCluster, consul_path, start_agent
from tests.lab.netns import Lab

ROOT = Path(__file__).resolve().parent.parent
_state_dir: str | None = None

# The only skips a CI run may have (test file, text in the reason, why). Any other skip fails a run with
# CI set: a test that silently does not run proves nothing. `pytest -rs` (scripts/test.sh) lists them all.
ALLOWED_SKIPS: tuple[tuple[str, str, str], ...] = (
    ("tests/integration/test_cli_ux.py", "is not a command (yet)", "UX table rows for commands not built yet"),
    ("tests/integration/test_cli_ux.py", "no listen command", "same, for listen"),
)
_unexpected_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(report.nodeid.startswith(path) and text in reason for path, text, _why in ALLOWED_SKIPS):
        _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _unexpected_skips:
        verdict = "failing the run (CI)" if os.environ.get("CI") else "CI would fail"
        terminalreporter.write_sep("=", f"{len(_unexpected_skips)} skip(s) not in ALLOWED_SKIPS: {verdict}")
        for line in _unexpected_skips:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _unexpected_skips and os.environ.get("CI") and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    global _state_dir
    for name in list(os.environ):
        if name.startswith("CONSUL_HTTP_") or name in ("CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY"):
            del os.environ[name]
    _state_dir = tempfile.mkdtemp(prefix="foundation-test-state-")
    os.environ["FOUNDATION_STATE_DIR"] = _state_dir


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (long lab campaigns) are deselected — not skipped — unless asked for:
    ``pytest -m slow …`` or ``FOUNDATION_TEST_SLOW=1``. CI stays under its time budget."""
    if "slow" in (config.getoption("markexpr") or "") or os.environ.get("FOUNDATION_TEST_SLOW") == "1":
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def pytest_unconfigure(config: pytest.Config) -> None:
    procs.close_all()
    if _state_dir:
        shutil.rmtree(_state_dir, ignore_errors=True)


def _need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the test lab needs root (network namespaces)")
        pytest.skip("the test lab needs root (network namespaces)")
    if not os.path.exists("/usr/sbin/sshd"):
        pytest.fail("OpenSSH server missing: run scripts/install-test-deps.sh")


@pytest.fixture(scope="session")
def consul_bin() -> str:
    """The consul binary (installed from Debian bullseye's package if missing)."""
    path = consul_path()
    if not path:
        subprocess.run([str(ROOT / "scripts" / "install-consul.sh")], check=True, timeout=600)
        path = consul_path()
    if not path:
        pytest.fail("consul could not be installed (scripts/install-consul.sh)")
    return path


@pytest.fixture(scope="module")
def consul_agent(consul_bin: str, tmp_path_factory: pytest.TempPathFactory):
    """A real single-server Consul agent on loopback, shared by the tests of one module."""
    agent = start_agent(base_dir=tmp_path_factory.mktemp("consul"))
    try:
        yield agent
    finally:
        agent.close()


@pytest.fixture
def fresh_consul(consul_bin: str, tmp_path: Path):
    """A real single-server Consul agent for this test alone."""
    agent = start_agent(base_dir=tmp_path / "consul")
    try:
        yield agent
    finally:
        agent.close()


@pytest.fixture
def consul_agent_acl(consul_bin: str, tmp_path: Path):
    """A real agent with ACLs enabled, default deny; ``.token`` is the master token."""
    agent = start_agent(acl=True, base_dir=tmp_path / "consul-acl")
    try:
        yield agent
    finally:
        agent.close()


@pytest.fixture
def make_lab():
    """Factory for labs of SSH hosts in network namespaces; every lab is torn down after the test."""
    _need_root()
    labs: list[Lab] = []

    def factory(n: int = 3, same_hostname: bool = False) -> Lab:
        lab = Lab(n, same_hostname=same_hostname)
        labs.append(lab)
        return lab

    try:
        yield factory
    finally:
        for lab in reversed(labs):
            lab.close()


@pytest.fixture
def consul_cluster(consul_bin: str, make_lab):
    """A real 3-server Consul cluster on lab hosts 0–2, leader elected; host 3 is ``.spare``."""
    cluster = ConsulCluster(make_lab(4))
    try:
        yield cluster.start()
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def shared_consul_cluster(consul_bin: str):
    """Like ``consul_cluster`` but shared by a module's tests: for tests that only read or add keys."""
    _need_root()
    lab = Lab(4)
    cluster = ConsulCluster(lab)
    try:
        yield cluster.start()
    finally:
        cluster.close()
        lab.close()


__all__ = ["ConsulAgent", "ConsulCluster", "Lab"]
