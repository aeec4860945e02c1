"""Dynamic completion against a real Consul agent: services, nodes, channels; silent and quick when down."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from foundation_cli.commands import completion

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def agent(consul_agent):
    """The shared real single-server agent (tests/conftest.py)."""
    return consul_agent


@pytest.fixture(scope="module")
def seeded(agent):
    """Services, channels and events as the other commands would leave them."""
    import consul

    host, port = agent.http_addr.rsplit("//", 1)[1].rsplit(":", 1)
    c = consul.Consul(host=host, port=int(port))
    c.kv.put("foundation/services/web", '{"mode": "singleton"}')
    c.kv.put("foundation/services/db/spec", '{"mode": "replicated"}')
    c.kv.put("foundation/services/worker", "{}")
    c.kv.put("foundation/channels/alerts/history/0001", "x")
    c.kv.put("foundation/channels/_control/history/0001", "x")
    c.event.fire("foundation:deploys", "v2")
    c.event.fire("foundation:_control", "{}")
    c.event.fire("unrelated", "x")
    c.agent.service.register("api", port=8080)
    c.kv.put("foundation/config/agent.log_level", "debug")
    c.kv.put("foundation/config/app/colour", "blue")
    c.kv.put("foundation/kv/app/mode", "blue")
    c.kv.put("foundation/kv/other", "x")
    return agent


@pytest.fixture
def env_for(monkeypatch, tmp_path):
    """Point Settings resolution at an address (and away from any real cluster state file)."""
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)

    def point(addr: str) -> None:
        monkeypatch.setenv("CONSUL_HTTP_ADDR", addr)

    return point


def test_service_names_from_kv_specs(seeded, env_for):
    env_for(seeded.http_addr)
    assert completion.service_names("") == ["db", "web", "worker"]
    assert completion.service_names("w") == ["web", "worker"]
    assert completion.service_names("zz") == []


def test_catalog_service_names(seeded, env_for):
    env_for(seeded.http_addr)
    names = completion.catalog_service_names("")
    assert "api" in names and "consul" in names
    assert completion.catalog_service_names("ap") == ["api"]


def test_node_names(seeded, env_for):
    env_for(seeded.http_addr)
    nodes = completion.node_names("")
    assert len(nodes) >= 1
    assert completion.node_names(nodes[0][:2]) and nodes[0] in completion.node_names(nodes[0][:2])


def test_channel_names_from_events_and_kv_without_internal_ones(seeded, env_for):
    env_for(seeded.http_addr)
    assert completion.channel_names("") == ["alerts", "deploys"]
    assert completion.channel_names("d") == ["deploys"]


def test_config_and_kv_keys(seeded, env_for):
    env_for(seeded.http_addr)
    assert completion.config_keys("") == ["agent.log_level", "app/colour"]
    assert completion.config_keys("app") == ["app/colour"]
    assert completion.kv_keys("app/") == ["app/mode"]


@pytest.mark.timeout(10)
def test_consul_down_gives_nothing(env_for):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env_for(f"http://127.0.0.1:{closed}")
    for func in (
        completion.service_names,
        completion.node_names,
        completion.channel_names,
        completion.config_keys,
        completion.kv_keys,
    ):
        assert func("") == []


@pytest.mark.timeout(10)
def test_consul_silent_gives_nothing_after_the_short_timeout(env_for):
    # Accepts TCP connections (kernel backlog) but never answers: only the read timeout ends the wait.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        env_for(f"http://127.0.0.1:{s.getsockname()[1]}")
        assert completion.channel_names("") == []
        assert completion.service_names("") == []


def test_bad_address_gives_nothing(env_for):
    env_for("unix:///nope")
    assert completion.node_names("") == []


def test_shell_completion_end_to_end_honours_consul_addr_on_the_line(seeded, tmp_path):
    """The Typer completion protocol, as bash's TAB runs it, with --consul-addr typed on the line."""
    script = tmp_path / "fdtest.py"
    script.write_text(
        textwrap.dedent(
            """
            import typer
            from foundation_cli.commands import completion

            app = typer.Typer()

            @app.command()
            def stop(
                name: str = typer.Argument(..., autocompletion=completion.service_names),
                consul_addr: str = typer.Option(None, "--consul-addr"),
            ) -> None:
                pass

            app(prog_name="fdtest")
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_") and k != "FOUNDATION_STATE_DIR"}
    env.update(
        FOUNDATION_STATE_DIR=str(tmp_path / "state"),
        _FDTEST_COMPLETE="complete_bash",
        COMP_WORDS=f"fdtest --consul-addr {seeded.http_addr} w",
        COMP_CWORD="3",
    )
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["web", "worker"]
    assert out.stderr == ""
