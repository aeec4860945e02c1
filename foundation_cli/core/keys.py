"""The KV layout: every key Foundation writes lives under one cluster prefix.

foundation/
  cluster                 cluster record: id, datacenter, servers (written by `up`)
  kv/<key>                `foundation kv` user keys
  services/<name>         service specs (singleton / replicated)
  locks/<name>            singleton lock keys (held by an agent session)
  status/<name>/<node>    what each agent reports about the instance it runs
  config/<key>            cluster-wide config values
  config-status/<node>    the config version each agent has applied
  channels/<ch>/blobs/<id>    broadcast payloads too big for an event
  channels/<ch>/history/<id>  durable channel history (bounded)
  agents/<node>           agent heartbeat/metadata
  optimizer/last          last optimizer report from the agents
  discovered/<addr>       machines an agent heard on mDNS that want in (unclaimed / claiming our id)
  drain/<node>            drain mark (`foundation drain`): the node's agent stops its instances, releases
                          its locks and puts its own node in Consul maintenance until `undrain` deletes it
  snapshots/<id>          index of the scheduled snapshots the leader's agent took (file on that node)
"""

from __future__ import annotations

PREFIX = "foundation"
CLUSTER = f"{PREFIX}/cluster"
USER_KV = f"{PREFIX}/kv/"
SERVICES = f"{PREFIX}/services/"
LOCKS = f"{PREFIX}/locks/"
STATUS = f"{PREFIX}/status/"
CONFIG = f"{PREFIX}/config/"
CONFIG_STATUS = f"{PREFIX}/config-status/"
CHANNELS = f"{PREFIX}/channels/"
AGENTS = f"{PREFIX}/agents/"
OPTIMIZER_LAST = f"{PREFIX}/optimizer/last"
DISCOVERED = f"{PREFIX}/discovered/"
DRAIN = f"{PREFIX}/drain/"
SNAPSHOTS = f"{PREFIX}/snapshots/"

# The Consul service every node agent registers as, and its TTL check.
AGENT_SERVICE = "foundation-agent"


def agent_service_id(node: str) -> str:
    return f"{AGENT_SERVICE}-{node}"


def agent_check_id(node: str) -> str:
    return f"{AGENT_SERVICE}-{node}:ttl"


# Consul user-event names Foundation fires: "foundation:<channel>".
EVENT_PREFIX = "foundation:"
CONTROL_CHANNEL = "_control"
# The leader's agent announces new, changed and resolved optimizer findings here (`listen _optimizer`).
OPTIMIZER_CHANNEL = "_optimizer"
