"""Pure logic behind foreign hosts: the agent's Python floor, ELF checks, bundle members, verify rules."""

from __future__ import annotations

import ast
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation_cli.core import agent_bundle, bootstrap, consul_binary, up_verify
from foundation_cli.core.bootstrap import HostPlan, Probe
from foundation_cli.errors import FoundationError

PKG = Path(__file__).resolve().parents[2] / "foundation_cli"


def _elf(machine: int, cls: int = 2, little: bool = True) -> bytes:
    head = b"\x7fELF" + bytes([cls, 1 if little else 2, 1]) + b"\0" * 9
    return head + struct.pack("<H" if little else ">H", 2) + struct.pack("<H" if little else ">H", machine)


# -- the agent runs on Python 3.9 ------------------------------------------------------------------


def _agent_closure() -> set[Path]:
    """Every foundation_cli module the agent imports (statically, including lazy imports)."""

    def module_file(name: str) -> Path | None:
        base = PKG.parent.joinpath(*name.split("."))
        for cand in (base / "__init__.py", base.with_suffix(".py")):
            if cand.is_file():
                return cand
        return None

    todo = ["foundation_cli.agent.__main__"] + [f"foundation_cli.agent.{p.stem}" for p in (PKG / "agent").glob("*.py")]
    seen: set[Path] = set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        path = module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").startswith("foundation_cli")
            ):
                todo += [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # type: ignore[list-item]
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("foundation_cli")]
    return seen


def test_the_agent_imports_no_cli_stack_and_parses_as_python_3_9():
    closure = _agent_closure()
    assert PKG / "agent" / "runner.py" in closure
    problems = []
    for path in sorted(closure):
        tree = ast.parse(path.read_text(), feature_version=(3, 9))  # `match`, parenthesised with … fail here
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                problems += [
                    f"{path.name}: imports {n}" for n in names if n.split(".")[0] in ("typer", "click", "rich")
                ]
            # `X | Y` evaluated at run time (isinstance, casts) needs 3.10; annotations are strings here.
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", "") in ("isinstance", "issubclass")
                and len(node.args) == 2
                and isinstance(node.args[1], ast.BinOp)
                and isinstance(node.args[1].op, ast.BitOr)
            ):
                problems.append(f"{path.name}:{node.lineno}: isinstance with X | Y")
            if isinstance(node, ast.keyword) and node.arg == "strict" and getattr(node.value, "value", None) is True:
                problems.append(f"{path.name}:{node.lineno}: zip(strict=) is 3.10+")
        annotations = [
            a
            for n in ast.walk(tree)
            for a in (
                [n.annotation]
                if isinstance(n, (ast.AnnAssign, ast.arg))
                else [n.returns]
                if isinstance(n, ast.FunctionDef)
                else []
            )
            if a is not None
        ]
        uses_union = any(isinstance(x, ast.BinOp) for a in annotations for x in ast.walk(a))
        if uses_union and "from __future__ import annotations" not in path.read_text():
            problems.append(f"{path.name}: X | Y annotations without `from __future__ import annotations`")
    assert problems == []


def test_agent_entry_is_argparse_not_the_cli():
    assert bootstrap.agent_argv(HostPlan("h", "a", "n", False, {}))[1:] == ["-m", "foundation_cli.agent"]
    main = (PKG / "agent" / "__main__.py").read_text()
    assert "argparse" in main and "typer" not in main


@pytest.mark.parametrize(
    ("python", "refused"), [("", "no python3 on the host"), ("3.8", "is Python 3.8"), ("2.7", "is Python 2.7")]
)
def test_preflight_refuses_old_or_missing_python_before_any_change(python, refused):
    with pytest.raises(FoundationError) as err:
        bootstrap.preflight(Probe(python=python, arch="x86_64"), HostPlan("host1", "a", "n", False, {}))
    assert refused in err.value.message and "nothing was changed" in err.value.message
    assert err.value.hint


@pytest.mark.parametrize("python", ["3.9", "3.10", "3.13"])
def test_preflight_accepts_3_9_and_later(python):
    bootstrap.preflight(Probe(python=python, arch="aarch64"), HostPlan("h", "a", "n", False, {}))


# -- the consul binary fits the host ------------------------------------------------------------------


def test_elf_header_decides_the_fit():
    assert consul_binary.fits(_elf(62), "x86_64") and not consul_binary.fits(_elf(62), "aarch64")
    assert consul_binary.fits(_elf(183), "aarch64") and not consul_binary.fits(_elf(183), "x86_64")
    assert consul_binary.fits(_elf(40, cls=1), "armv7l") and not consul_binary.fits(_elf(40, cls=2), "armv7l")
    assert not consul_binary.fits(b"#!/bin/sh\necho consul\n", "x86_64")
    assert consul_binary.describe(_elf(183)) == "ELF 64-bit aarch64"
    assert consul_binary.describe(b"MZ") == "not an ELF executable"


@given(st.binary(max_size=64))
def test_elf_parser_never_crashes_on_arbitrary_bytes(data):
    info = consul_binary.elf_machine(data)
    assert info is None or data[:4] == b"\x7fELF"
    consul_binary.describe(data)
    consul_binary.fits(data, "x86_64")


def test_for_arch_uses_the_local_binary_only_when_it_fits(tmp_path):
    x86, arm = _elf(62) + b"x86", _elf(183) + b"arm"
    fetched = tmp_path / "consul"
    fetched.write_bytes(arm)
    assert consul_binary.for_arch("x86_64", local=lambda: x86) == x86
    assert consul_binary.for_arch("aarch64", local=lambda: x86, fetch=lambda a: fetched) == arm


def test_for_arch_per_arch_config_and_clear_refusals(tmp_path):
    arm_file, x86_file = tmp_path / "arm", tmp_path / "x86"
    arm_file.write_bytes(_elf(183))
    x86_file.write_bytes(_elf(62))
    assert consul_binary.for_arch("aarch64", local=lambda: None, per_arch={"arm64": str(arm_file)}) == _elf(183)
    with pytest.raises(FoundationError, match=r"consul_binary.arm64 .* is ELF 64-bit x86-64, the host is aarch64"):
        consul_binary.for_arch("aarch64", local=lambda: None, per_arch={"aarch64": str(x86_file)}, alias="pi")

    def offline(arch):
        raise FoundationError("cannot fetch Debian's consul for arm64: offline", hint="name one")

    with pytest.raises(FoundationError, match="pi: no consul for aarch64: the local one is ELF 64-bit x86-64") as err:
        consul_binary.for_arch("aarch64", local=lambda: _elf(62), alias="pi", fetch=offline)
    assert err.value.hint == "name one"
    with pytest.raises(FoundationError, match="unsupported architecture s390x"):
        consul_binary.for_arch("s390x", local=lambda: _elf(62))


def test_config_names_a_consul_per_architecture(tmp_path):
    from foundation_cli.core import cluster_config
    from foundation_cli.errors import ConfigError

    path = tmp_path / "foundation.yaml"
    path.write_text("hosts: [a]\nconsul_binary: {amd64: /x/consul, aarch64: /y/consul}\n")
    cfg = cluster_config.load(str(path))
    assert cfg.consul_binaries == {"amd64": "/x/consul", "arm64": "/y/consul"}
    path.write_text("hosts: [a]\nconsul_binary: {sparc: /x}\n")
    with pytest.raises(ConfigError, match="unknown architecture 'sparc'"):
        cluster_config.load(str(path))


def test_config_login_paths(tmp_path):
    from foundation_cli.core import cluster_config, orchestrator

    path = tmp_path / "foundation.yaml"
    path.write_text(
        "hosts:\n  - a\n  - {address: b, port: 2222, proxy_jump: root@a}\n"
        "ssh:\n  sudo_password_env: SUDO_PW\n  proxy_jump: jump@bastion\nagent:\n  wheelhouse: /srv/wheels\n"
    )
    cfg = cluster_config.load(str(path))
    opts = orchestrator.ssh_options(cfg)
    assert opts.host_proxy_jump == {"b": "root@a"} and opts.proxy_jump == "jump@bastion"
    assert opts.sudo_password_env == "SUDO_PW" and cfg.agent.wheelhouse == "/srv/wheels"
    path.write_text("hosts:\n  - a\n  - {address: b, proxy_jump: root@a}\n")
    assert cluster_config.load(str(path)).mode == "apprentice"  # how to reach a host is not a wizard setting


# -- bundles for another Python ------------------------------------------------------------------------


def test_compiled_modules_with_a_pure_twin_are_dropped(tmp_path):
    whl = tmp_path / "pkg-1.0-cp39-cp39-manylinux2014_aarch64.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("pkg/_fast.py", "x = 1\n")
        zf.writestr("pkg/_fast.cpython-39-aarch64-linux-gnu.so", b"\x7fELF")
        zf.writestr("pkg/_fast.pyx", "cdef int x\n")
        zf.writestr("pkg/_only.cpython-39-aarch64-linux-gnu.so", b"\x7fELF")
        zf.writestr("pkg-1.0.dist-info/METADATA", "Name: pkg\n")
    keep, compiled = agent_bundle._wheel_members(whl)
    assert sorted(i.filename for i in keep) == [
        "pkg-1.0.dist-info/METADATA",
        "pkg/_fast.py",
        "pkg/_only.cpython-39-aarch64-linux-gnu.so",
    ]
    assert compiled == ["pkg/_only.cpython-39-aarch64-linux-gnu.so"]


def test_selector_uses_the_local_bundle_only_for_a_matching_host(monkeypatch, tmp_path):
    local = agent_bundle.Bundle(tmp_path / "l", "sha", "3.11", "x86_64", 1)
    built = []
    monkeypatch.setattr(agent_bundle, "for_target", lambda py, arch, wheelhouse=None: built.append((py, arch)) or local)
    monkeypatch.delenv("FOUNDATION_AGENT_BUNDLE", raising=False)
    sel = agent_bundle.Selector(local)
    assert sel("3.11", "x86_64") is local and built == []
    sel("3.9", "aarch64")
    sel("3.9", "aarch64")
    assert built == [("3.9", "aarch64")]
    assert agent_bundle.python_supported("3.9") and not agent_bundle.python_supported("3.8")


# -- verify: what counts as given up, and which log line is the cause ------------------------------------


def test_verify_gives_up_on_failed_units_and_crash_loops_only():
    assert up_verify._gave_up(("failed", 0)) and up_verify._gave_up(("inactive", 0))
    assert up_verify._gave_up(("activating", 3)) and not up_verify._gave_up(("activating", 1))
    assert not up_verify._gave_up(("active", 7))  # restarted at boot, running now
    assert not up_verify._gave_up(None)


class _Res:
    def __init__(self, out: str) -> None:
        self.stdout = out


class _Conn:
    def __init__(self, out: str) -> None:
        self.out = out

    def run(self, cmd, **kw):
        return _Res(self.out)


def test_a_failed_host_names_the_program_error_not_systemds_lines():
    journal = (
        "Traceback (most recent call last):\n"
        '  File "/opt/foundation/agent/lib/json.py", line 1, in <module>\n'
        "ImportError: lab: agent cannot start\n"
        "foundation-agent.service: Main process exited, code=exited, status=1/FAILURE\n"
        "foundation-agent.service: Failed with result 'exit-code'.\n"
        "Failed to start Foundation node agent.\n"
    )
    result = bootstrap.HostResult(alias="h1")

    class Run:
        results = {"h1": result}
        conns = {"h1": _Conn(journal)}
        probes = {"h1": Probe(init="systemd")}

        def say(self, *a):
            pass

    up_verify._fail(Run(), "h1", "agent", "the node agent is not running")
    assert result.error == "the node agent is not running: ImportError: lab: agent cannot start"
    assert result.exit_status == 7
    assert "journalctl -u foundation-agent" in result.warnings[0]


def test_service_states_parses_systemd_and_supervised_answers():
    conn = _Conn("consul=active 0\nagent=activating 4\n")
    assert up_verify.service_states(conn) == {"consul": ("active", 0), "agent": ("activating", 4)}


def test_raw_ssh_lines_show_the_bastion_and_port():
    from foundation_cli.raw.operation import RawOperation
    from foundation_cli.raw.render import render_lines

    op = RawOperation(
        kind="ssh-exec", host="10.0.0.7", user="root", port=2222, proxy_jump="admin@bastion", command="true"
    )
    assert render_lines(op) == ["ssh -J admin@bastion -p 2222 root@10.0.0.7 true"]
    plain = RawOperation(kind="ssh-exec", host="10.0.0.7", user="root", port=22, command="true")
    assert render_lines(plain) == ["ssh root@10.0.0.7 true"]


def test_saved_ssh_settings_keep_the_bastion_and_the_sudo_password_source():
    from foundation_cli.facades import remote

    state = {
        "ssh": {"user": "root", "sudo_password_env": "PW", "known_hosts": "/k"},
        "host_ssh": {"10.0.1.7": {"port": 2222, "proxy_jump": "root@10.0.0.5"}},
    }
    h = remote.host_ssh("10.0.1.7", state)
    assert h.argv() == ["ssh", "-o", "UserKnownHostsFile=/k", "-p", "2222", "-J", "root@10.0.0.5", "root@10.0.1.7"]
    assert h.sudo_password_env == "PW"
    assert remote.host_ssh("10.0.0.9", state).proxy_jump is None


def test_a_target_without_a_fitting_zeroconf_gets_a_bundle_without_mdns(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def fake_download(dest, python, arch, reqs, *, wheelhouse, extra):
        calls.append(list(reqs))
        if "zeroconf" in reqs:
            raise FoundationError("no agent dependencies for Python 3.9 on aarch64 from wheelhouse w: zeroconf")
        for req in reqs:
            name = req.split("==")[0].replace("-", "_")
            with zipfile.ZipFile(dest / f"{name}-1.0-py3-none-any.whl", "w") as zf:
                zf.writestr(f"{name}/__init__.py", "")

    monkeypatch.setattr(agent_bundle, "_pip_download", fake_download)
    bundle = agent_bundle.for_target("3.9", "aarch64", wheelhouse=str(tmp_path / "w"))
    assert calls[0] == ["requests", "zeroconf"] and calls[1] == ["requests"]
    assert bundle.missing == ["zeroconf"] and bundle.path.is_file()
