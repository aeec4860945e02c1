#!/usr/bin/env bash
# Install what the test suite needs on a Debian machine (run as root):
#   - OpenSSH server, iproute2, util-linux, procps, dnsmasq, curl, groff, zsh, fish (Debian packages)
#   - the real Consul 1.8.7 (scripts/install-consul.sh; no change to apt's config)
#   - the Python package with its test extras (pip install -e '.[test]')
#   - foreign lab hosts (tests/lab/nspawn.py): debootstrap, systemd-container, qemu-user-static, the
#     binfmt_misc aarch64 entry, and the Debian 11 (amd64, arm64) and Debian 13 roots, built once into
#     /var/cache/foundation-lab/roots by scripts/build-lab-roots.sh (a later run reuses them)
#
#   scripts/install-test-deps.sh
#
# Idempotent and fast when everything is present: apt-get only runs when a
# needed command is missing, pip only when an import fails.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive

# command -> Debian package that provides it
need=()
check() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || need+=("$2"); }
check sshd openssh-server
check ssh openssh-client
check ssh-keygen openssh-client
check ip iproute2
check unshare util-linux
check nsenter util-linux
check mount mount
check pgrep procps
check dnsmasq dnsmasq-base
check curl curl
check bash bash
check groff groff-base
check zsh zsh
check fish fish
check debootstrap debootstrap
check systemd-nspawn systemd-container
check qemu-aarch64-static qemu-user-static
check sudo sudo
check tmux tmux

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages (${need[*]}) and not root: install them or rerun as root" >&2
    exit 1
  fi
  # shellcheck disable=SC2207
  pkgs=($(printf '%s\n' "${need[@]}" | sort -u))
  echo "installing: ${pkgs[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

scripts/install-consul.sh

# Foreign lab hosts: Debian roots booted with systemd-nspawn (arm64 through qemu-user + binfmt_misc).
if [ "$(id -u)" -eq 0 ]; then
  scripts/build-lab-roots.sh
fi

py="${PYTHON:-python3}"
here="$PWD"
# The installed foundation_cli must be THIS checkout (CI clones elsewhere; subprocesses and lab hosts
# import the installed one), so re-install when it points anywhere else.
if ! (cd / && "$py" -c 'import os, sys, foundation_cli, pytest, pytest_timeout, xdist, typer, consul, paramiko, zeroconf, yaml, jsonschema, importlinter, mypy
sys.exit(0 if os.path.dirname(os.path.dirname(os.path.realpath(foundation_cli.__file__))) == os.path.realpath(sys.argv[1]) else 1)' "$here") 2>/dev/null \
  || ! "$py" -m ruff --version >/dev/null 2>&1; then
  pip_flags=()
  # Debian's python marks itself externally managed (PEP 668); this is a disposable test machine.
  if "$py" -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
    pip_flags+=(--break-system-packages)
  fi
  if ! "$py" -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-pip python3-venv >/dev/null
  fi
  "$py" -m pip install -q "${pip_flags[@]}" -e '.[test]'
fi
echo "test dependencies ready"
