#!/usr/bin/env bash
# Build the foreign-host roots of the test lab (tests/lab/nspawn.py) with debootstrap, once, into a
# cache folder outside the checkout, so a later run (or CI on the same machine) reuses them:
#
#   scripts/build-lab-roots.sh [SUITE-ARCH ...]     (default: bullseye-amd64 bullseye-arm64 trixie-amd64)
#
#   FOUNDATION_LAB_ROOTS   cache folder (default /var/cache/foundation-lab/roots)
#   FOUNDATION_LAB_MIRROR  Debian archive (default http://deb.debian.org/debian)
#
# Each root is built into ROOT.tmp and renamed when complete (a killed build leaves no half root), under
# a flock per root, so concurrent callers wait for one build instead of racing. A root carries, besides
# the Debian base: an empty /root/.ssh (the lab binds the client key over it at boot), two login users
# for the sudo paths (`labpw`, whose sudo asks for the password below, and `labnopw`, NOPASSWD sudo), and
# an sshd_config.d include point the lab binds a per-host drop-in into (port, etc.).
# arm64 roots need qemu-user-static and the binfmt_misc aarch64 entry (registered here when missing,
# with the C flag so sudo works in them: `scripts/build-lab-roots.sh --binfmt` does only that).
# Needs root. Idempotent: a complete root (marker file .foundation-lab-root) is left alone.
set -euo pipefail

roots="${FOUNDATION_LAB_ROOTS:-/var/cache/foundation-lab/roots}"
mirror="${FOUNDATION_LAB_MIRROR:-http://deb.debian.org/debian}"
# Bump when the recipe below changes: older roots are rebuilt.
recipe=2
# The sudo password of the `labpw` user in lab roots (a throwaway test machine's password; the lab
# passes it to the product through an environment variable, never a command line).
labpw_password="${FOUNDATION_LAB_SUDO_PASSWORD:-lab-sudo-pw}"

[ "$#" -gt 0 ] || set -- bullseye-amd64 bullseye-arm64 trixie-amd64
binfmt_only=0
if [ "$1" = --binfmt ]; then binfmt_only=1; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "build-lab-roots: needs root (debootstrap)" >&2
  exit 1
fi
mkdir -p "$roots"

ensure_binfmt_aarch64() {
  if [ "$(uname -m)" = aarch64 ]; then return 0; fi
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  local entry=/proc/sys/fs/binfmt_misc/qemu-aarch64 conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  # The C flag (credentials from the binary) makes setuid programs such as sudo work in arm64 roots;
  # Debian registers the entry without it, so re-register when it is missing.
  if [ -e "$entry" ] && grep -q '^flags: .*C' "$entry"; then return 0; fi
  if [ ! -r "$conf" ]; then
    echo "build-lab-roots: $conf missing: install qemu-user-static" >&2
    return 1
  fi
  if [ -e "$entry" ]; then echo -1 > "$entry"; fi
  grep -v '^#' "$conf" | grep . | sed 's/:[A-Z]*$/:POCF/' > /proc/sys/fs/binfmt_misc/register
}

build_one() {
  local name="$1" suite="${1%-*}" arch="${1##*-}"
  local root="$roots/$name" marker
  marker="$root/.foundation-lab-root"
  if [ -f "$marker" ] && [ "$(cat "$marker")" = "$recipe" ]; then
    echo "lab root $name: cached ($root)"
    return 0
  fi
  exec 9>"$roots/.$name.lock"
  flock 9
  if [ -f "$marker" ] && [ "$(cat "$marker")" = "$recipe" ]; then
    echo "lab root $name: cached ($root)"
    exec 9>&-
    return 0
  fi
  if [ "$arch" != amd64 ]; then ensure_binfmt_aarch64; fi
  local tmp="$root.tmp" start=$SECONDS
  rm -rf "$tmp"
  echo "lab root $name: debootstrap $suite ($arch) …"
  debootstrap --variant=minbase --arch="$arch" \
    --include=python3,openssh-server,systemd,systemd-sysv,dbus,iproute2,sudo,procps \
    "$suite" "$tmp" "$mirror" > "$roots/.$name.log" 2>&1 || {
      echo "lab root $name: debootstrap failed, last lines of $roots/.$name.log:" >&2
      tail -n 20 "$roots/.$name.log" >&2
      exit 1
    }
  install -d -m 0700 "$tmp/root/.ssh"
  chroot "$tmp" /bin/sh -euc "
    useradd -m -s /bin/bash labpw
    useradd -m -s /bin/bash labnopw
    echo 'labpw:$labpw_password' | chpasswd
    echo 'labnopw:*' | chpasswd -e
    install -d -m 0700 -o labpw -g labpw /home/labpw/.ssh
    install -d -m 0700 -o labnopw -g labnopw /home/labnopw/.ssh
    echo 'labpw ALL=(ALL) ALL' > /etc/sudoers.d/labpw
    echo 'labnopw ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/labnopw
    chmod 0440 /etc/sudoers.d/labpw /etc/sudoers.d/labnopw
    mkdir -p /etc/ssh/sshd_config.d
    touch /etc/ssh/sshd_config.d/lab.conf
    # No getty on a console nobody reads; no timers waking a quiet host.
    systemctl mask console-getty.service getty@tty1.service apt-daily.timer apt-daily-upgrade.timer \
      e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
    apt-get clean
  "
  # Debian's sshd_config includes sshd_config.d/*.conf from bullseye on; make sure.
  grep -q '^Include /etc/ssh/sshd_config.d/\*.conf' "$tmp/etc/ssh/sshd_config" \
    || sed -i '1i Include /etc/ssh/sshd_config.d/*.conf' "$tmp/etc/ssh/sshd_config"
  echo "$recipe" > "$tmp/.foundation-lab-root"
  rm -rf "$root"
  mv "$tmp" "$root"
  echo "lab root $name: built in $((SECONDS - start)) s ($root)"
  exec 9>&-
}

case " $* " in *-arm64\ *|*--binfmt*) ensure_binfmt_aarch64 ;; esac
if [ "$binfmt_only" = 1 ]; then exit 0; fi
# Concurrently: the arm64 build (qemu, CPU-bound) overlaps the downloads of the others (~4 min on a
# fresh machine instead of ~6.5).
pids=()
for spec in "$@"; do
  build_one "$spec" &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=1
done
exit "$status"
