#!/usr/bin/env python3
"""`foundation up` over SSH on fresh hosts, 1 / 5 / 10 / 20 of them side by side in one run.

    sudo python3 bench/up.py [--sizes 1,5,10,20] [--parallel N] [--no-rerun] [--own-disk] [--repeat K] [--log-dir DIR]

For each size, a fresh lab (network-namespace hosts with their own sshd and mounts; 20 hosts take
two lab slots joined on one bridge) and its own state dir, then `foundation up -v`. The agent
bundle is built (cached) before timing, as an operator's second `up` would find it. Prints per size:

  wall s       the whole `up`, and its ratio to one host (goals: 5 <= 1.3x, 10 <= 1.6x, 20 <= 2.5x)
  last done s  when the last host reported "done" (its own steps finished)
  tail s       wall - last done: waiting for the cluster and the agents, writing the record
  op cpu s     CPU seconds of the `foundation up` process (the operator's machine)
  host cpu s   CPU seconds spent inside the hosts during the run (sshd sessions, tar, consul, the
               agent's start), in total and per host
  cpu floor    (op cpu + host cpu) / CPUs, as a multiple of the one-host wall time: on this machine,
               where every lab host shares its CPUs, no run of that size can be faster than that

then the no-change re-run at 10 hosts (goal <= 3 s) and `down` at that size. Lab hosts get a plain
~/.bashrc (this machine's runs pyenv init on every SSH command; --keep-bashrc keeps it). Every lab host shares
this machine's CPUs, so at 10-20 hosts the hosts' own CPU is what the wall time measures: the CPU
columns say where it goes. Every process it starts lives in the lab's namespaces and dies with it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.lab.cli import cluster_env, pinned_bundle  # noqa: E402
from tests.lab.netns import Lab  # noqa: E402
from tests.lab.procs import run as run_cmd  # noqa: E402
from tests.lab.slots import MAX_HOSTS  # noqa: E402

SETTLE = 10.0
GOALS = {1: None, 5: 1.3, 10: 1.6, 20: 2.5}
TICK = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def hosts_lab(n: int, *, plain_bashrc: bool = True, own_disk: bool = False):
    """``n`` fresh hosts on one L2 segment: one lab, or several labs' hosts moved onto the first bridge."""
    labs: list[Lab] = []
    try:
        left = n
        while left:
            labs.append(Lab(min(left, MAX_HOSTS), name_prefix=f"b{len(labs)}n"))
            left -= len(labs[-1].hosts)
        first = labs[0]
        for other in labs[1:]:  # join: same bridge, on-link routes both ways (no forwarding in the root)
            # The other lab's gateway address moves along, so this machine still reaches its hosts.
            gateway = f"{other.bridge_ip}/{other.prefix_len}"
            run_cmd(["ip", "addr", "del", gateway, "dev", other.bridge])
            run_cmd(["ip", "addr", "add", gateway, "dev", first.bridge])
            for h in other.hosts:
                run_cmd(["ip", "link", "set", h.veth, "master", first.bridge])
                run_cmd(["ip", "-n", h.netns, "route", "add", first.subnet, "dev", "eth0"])
            for h in first.hosts:
                run_cmd(["ip", "-n", h.netns, "route", "add", other.subnet, "dev", "eth0"])
        if plain_bashrc:
            # Lab hosts see the machine's /root through an overlay, so every SSH command would source
            # its ~/.bashrc (here: pyenv init, ~0.1 s CPU per command). A fresh host has none of it.
            for lab in labs:
                for h in lab.hosts:
                    h.write("/root/.bashrc", "# bench/up.py: a fresh machine's root shell startup\n")
        if own_disk:
            # Every lab host writes through an overlay onto this machine's one virtual disk: unpacking the
            # agent (~630 files) costs ~0.6 s of kernel CPU there, ~0.08 s on a tmpfs. --own-disk gives each
            # host's install root and Consul data dir a tmpfs, as if each host had a disk of its own.
            for lab in labs:
                for h in lab.hosts:
                    h.exec(
                        "for d in /opt/foundation /var/lib/foundation; do mkdir -p $d && mount -t tmpfs tmpfs $d; done"
                    )
        yield labs
    finally:
        for lab in labs:
            lab.close()


def write_config(path: Path, labs: list[Lab]) -> None:
    lines = "".join(f"  - {{address: {h.ip}, identity_file: {lab.ssh_key}}}\n" for lab in labs for h in lab.hosts)
    known = path.parent / "known_hosts"
    known.write_text("".join(Path(lab.known_hosts).read_text() for lab in labs))
    path.write_text(f"hosts:\n{lines}ssh:\n  user: root\n  known_hosts: {known}\n")


def host_cpu(labs: list[Lab]) -> float:
    """CPU seconds of every process in the hosts, with their reaped children (sshd sessions)."""
    return sum(host_cpu_by_kind(labs).values())


def host_cpu_by_kind(labs: list[Lab]) -> dict[str, float]:
    """The same, by what spent it: sshd (its finished sessions: the shells, tar, ...), consul, agent, other."""
    totals = dict.fromkeys(("sshd", "consul", "agent", "other"), 0)
    for lab in labs:
        for h in lab.hosts:
            for pid in h.pids():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = Path(f"/proc/{pid}/stat").read_text()
                    fields = stat.rsplit(")", 1)[1].split()
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    kind = (
                        "sshd"
                        if "sshd" in cmd
                        else "agent"
                        if "foundation_cli.agent" in cmd
                        else "consul"
                        if "consul agent" in cmd and "while" not in cmd
                        else "other"
                    )
                    totals[kind] += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return {kind: ticks / TICK for kind, ticks in totals.items()}


def timed(argv: list[str], cwd: Path, env: dict) -> tuple[float, float, str]:
    """(wall s, CPU s of the command and its children, its stderr)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900
    )
    took = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[3:])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return took, cpu, proc.stderr


def last_done(stderr: str) -> float:
    times = [float(m.group(1)) for m in re.finditer(r"^\s*([\d.]+)s\s+\S+: done$", stderr, re.M)]
    return max(times) if times else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,5,10,20", help="host counts, comma-separated (first = baseline)")
    parser.add_argument("--parallel", type=int, default=None, help="pass --parallel N to up")
    parser.add_argument("--no-rerun", action="store_true", help="skip the no-change re-run and down")
    parser.add_argument(
        "--own-disk", action="store_true", help="a tmpfs for each host's /opt/foundation and /var/lib/foundation"
    )
    parser.add_argument(
        "--keep-bashrc", action="store_true", help="hosts keep this machine's /root/.bashrc (as the issue baseline did)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of every size; medians are reported (Raft's randomised "
        "election timeout alone moves one run by up to 1 s)",
    )
    parser.add_argument("--log-dir", help="keep each size's `up -v` output there (up-N-hosts.txt)")
    opts = parser.parse_args()
    if opts.log_dir:
        os.makedirs(opts.log_dir, exist_ok=True)
    if os.geteuid() != 0:
        sys.exit("bench/up.py needs root (network namespaces)")
    sizes = [int(s) for s in opts.sizes.split(",")]
    cli = [sys.executable, "-m", "foundation_cli"]
    extra = ["--parallel", str(opts.parallel)] if opts.parallel else []
    runs: dict[int, list[tuple]] = {n: [] for n in sizes}  # per size: (wall, last done, op cpu, host cpu, load, kinds)
    rerun = None
    with tempfile.TemporaryDirectory(prefix="bench-up-") as tmp:
        # Built (cached) before timing, as an operator's second `up` finds it; a copy: another checkout's
        # `up` on this machine drops older bundles from the shared cache.
        bundle = pinned_bundle(tmp)
        bundle_kib = bundle.stat().st_size // 1024
        for rnd in range(opts.repeat):  # rounds interleave the sizes: a busy minute hits every size alike
            for n in sizes:
                d = Path(tmp, f"h{n}-{rnd}")
                d.mkdir()
                env = cluster_env(d, bundle=bundle)
                with hosts_lab(n, plain_bashrc=not opts.keep_bashrc, own_disk=opts.own_disk) as labs:
                    write_config(d / "foundation.yaml", labs)
                    cpu0 = host_cpu_by_kind(labs)
                    load0 = os.getloadavg()[0]
                    wall, op_cpu, err = timed(cli + ["up", "-v", *extra], d, env)
                    time.sleep(1.0)
                    kinds = {k: v - cpu0[k] for k, v in host_cpu_by_kind(labs).items()}
                    runs[n].append((wall, last_done(err), op_cpu, sum(kinds.values()), load0, kinds))
                    if opts.log_dir:
                        Path(opts.log_dir, f"up-{n}-hosts-{rnd + 1}.txt").write_text(err)
                    print(f"  round {rnd + 1}: {n:>2} hosts {wall:6.2f} s", file=sys.stderr, flush=True)
                    if n == 10 and rnd == 0 and not opts.no_rerun:
                        time.sleep(SETTLE)  # let the just-started agents finish booting, as before a later re-run
                        try:
                            again, again_cpu, _ = timed(cli + ["up", *extra], d, env)
                            down, down_cpu, _ = timed(cli + ["down"], d, env)
                            rerun = (again, again_cpu, down, down_cpu)
                        except SystemExit as exc:  # still print the figures above
                            print(exc, file=sys.stderr)
    med = {n: [statistics.median(r[i] for r in runs[n]) for i in range(5)] for n in sizes}
    ncpu = os.cpu_count() or 1
    one = med[sizes[0]][0]
    print(f"`foundation up` on fresh hosts, {os.cpu_count()} CPUs shared by every lab host and the operator")
    if opts.repeat > 1:
        print(f"(medians of {opts.repeat} rounds; each round ran every size once, in this order)")
    print(
        f"{'hosts':>5} {'wall s':>7} {'x 1 host':>8} {'goal':>6} {'last done s':>11} {'tail s':>7}"
        f" {'op cpu s':>8} {'host cpu s':>10} {'per host':>8} {'cpu floor':>9} {'load':>5}"
        + ("  every round's wall s" if opts.repeat > 1 else "")
    )
    for n in sizes:
        wall, done, op_cpu, hosts, load = med[n]
        goal = GOALS.get(n)
        ratio = wall / one
        verdict = f"{goal:>4.1f}{'✓' if ratio <= goal else '✗'}" if goal else "     -"
        each = "  " + " ".join(f"{r[0]:.2f}" for r in runs[n]) if opts.repeat > 1 else ""
        print(
            f"{n:>5} {wall:>7.2f} {ratio:>8.2f} {verdict:>6} {done:>11.2f} {wall - done:>7.2f}"
            f" {op_cpu:>8.2f} {hosts:>10.2f} {hosts / n:>8.2f} {(op_cpu + hosts) / ncpu / one:>8.2f}x {load:>5.1f}{each}"
        )
    split = {n: {k: statistics.median(r[5][k] for r in runs[n]) for k in runs[n][0][5]} for n in sizes}
    print(
        "host CPU s per host, by process: "
        + "; ".join(f"{n}: " + " ".join(f"{k} {v / n:.2f}" for k, v in kinds.items()) for n, kinds in split.items())
    )
    if rerun:
        again, again_cpu, down, down_cpu = rerun
        print(f"up 10 hosts (no change)  {again:6.2f} s, op cpu {again_cpu:.2f} s (goal <= 3 s; {SETTLE:.0f} s after)")
        print(f"down 10 hosts            {down:6.2f} s, op cpu {down_cpu:.2f} s")
    print(
        f"(load average now {os.getloadavg()[0]:.1f}; agent bundle {bundle_kib} KiB; hosts' ~/.bashrc "
        f"{'the machine' + chr(39) + 's' if opts.keep_bashrc else 'plain'}; install root and Consul data "
        f"{'on a tmpfs per host' if opts.own_disk else 'through the lab overlay'}; issue baseline 1/5/10 hosts = 4.0/8.3/36.1 s)"
    )


if __name__ == "__main__":
    main()
