#!/usr/bin/env bash
# The main job: a local one-node Foundation cluster on this machine with a demo
# singleton, a replicated service and a broadcast, shown through Foundation's
# own commands (and one --explain so you see the raw Consul calls).
#
#   bash scripts/demo.sh            # install what is missing, then run the demo
#   foundation down --local         # stop it afterwards (add --purge to drop its data)
#
# Installs, when missing: Consul 1.8.7 from Debian bullseye's package (into
# /usr/local/bin, system apt config untouched) and this package into .venv (editable).
# Never multicasts: `up --local` skips discovery.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "install: consul and the foundation package"
command -v consul >/dev/null 2>&1 || bash scripts/install-consul.sh
if [ ! -x .venv/bin/foundation ]; then
  if ! python3 -m venv .venv 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv .venv
  fi
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e .   # editable: a re-run after `git pull` runs the new code
fi
export PATH="$PWD/.venv/bin:$PATH"
# The demo talks to the cluster it makes, not to whatever CONSUL_HTTP_ADDR points at.
unset CONSUL_HTTP_ADDR CONSUL_HTTP_TOKEN
foundation --version

step "foundation up --local   (one Consul server + the node agent, background processes)"
foundation up --local

step "a singleton: exactly one in the cluster"
foundation start-singleton demo-clock -- sh -c 'while true; do echo "tick $(date +%T)"; sleep 5; done'

step "a replicated service: one per node"
foundation start-replicated demo-echo -- sh -c 'while true; do echo "alive on $(hostname)"; sleep 10; done'

step "a broadcast to every node (with --explain: the raw operations), received by a listener"
foundation listen demo --count 1 --timeout 20s &
listener=$!
sleep 2  # let the listener start its blocking query
foundation broadcast demo "hello from foundation" --durable --explain
wait "$listener"

step "what runs where"
foundation ps
foundation discover demo-clock

step "cluster health"
foundation status

# `foundation` lives in .venv/bin, which is on this script's PATH, not on the caller's.
printf '\nDone. The cluster keeps running. `foundation` is in .venv/bin: run `source .venv/bin/activate`\n'
printf 'first (or call .venv/bin/foundation), then try `foundation ps`, `foundation logs demo-clock`,\n'
printf '`foundation optimize --explain`. Stop it with `foundation down --local`.\n'
