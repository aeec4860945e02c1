#!/usr/bin/env bash
# Install the real Consul 1.8.7 binary from Debian bullseye's package, without
# touching the system's apt configuration: a private sources list, state and
# cache dir, `apt-get download`, then `dpkg -x` and copy usr/bin/consul.
#
#   scripts/install-consul.sh [DEST_DIR]     (default /usr/local/bin, or ~/.local/bin if not writable)
#
# Idempotent and fast when a consul binary is already at DEST_DIR.
set -euo pipefail

dest="${1:-}"
if [ -z "$dest" ]; then
  if [ -w /usr/local/bin ]; then dest=/usr/local/bin; else dest="$HOME/.local/bin"; fi
fi
mkdir -p "$dest"
if [ -x "$dest/consul" ] && "$dest/consul" version >/dev/null 2>&1; then
  echo "consul already installed: $dest/consul ($("$dest/consul" version | head -n1))"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/etc"
# Pin the archive keyring explicitly: newer Debian releases no longer put it in trusted.gpg.d.
signed=""
if [ -r /usr/share/keyrings/debian-archive-keyring.gpg ]; then
  signed="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
fi
echo "deb ${signed}http://deb.debian.org/debian bullseye main" > "$work/etc/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$work/etc/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o "APT::Get::List-Cleanup=0"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
apt-get "${apt_opts[@]}" -qq update
( cd "$work" && apt-get "${apt_opts[@]}" -qq download consul )
deb="$(ls "$work"/consul_*.deb | head -n1)"
dpkg -x "$deb" "$work/root"
install -m 0755 "$work/root/usr/bin/consul" "$dest/consul"
echo "installed $("$dest/consul" version | head -n1) to $dest/consul"
