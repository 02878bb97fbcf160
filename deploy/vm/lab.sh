#!/bin/bash
# Runs inside the appliance VM at every boot, before hopwatch starts
# (vm-lab.service): a two-hop lab of network namespaces for hopwatch's targets.
#
#   root ns (hopwatch) vm0 198.18.200.1/30, fd00:200::1/64
#     └─ r1: r1a 198.18.200.2 / fd00:200::2 ── r1b 198.18.201.1 / fd00:201::1
#          └─ dst: dst0 198.18.201.2 / fd00:201::2, fd00:201::3   (the targets)
#
# The VM has no network device of its own: nothing here can leave it.
set -euo pipefail

ip netns add r1
ip netns add dst
ip link add vm0 type veth peer name r1a netns r1
ip -n r1 link add r1b type veth peer name dst0 netns dst

ip addr add 198.18.200.1/30 dev vm0
ip addr add fd00:200::1/64 dev vm0 nodad
ip link set vm0 up
ip route add 198.18.201.0/30 via 198.18.200.2
ip -6 route add fd00:201::/64 via fd00:200::2

ip -n r1 addr add 198.18.200.2/30 dev r1a
ip -n r1 addr add fd00:200::2/64 dev r1a nodad
ip -n r1 addr add 198.18.201.1/30 dev r1b
ip -n r1 addr add fd00:201::1/64 dev r1b nodad
ip -n r1 link set lo up
ip -n r1 link set r1a up
ip -n r1 link set r1b up
ip netns exec r1 sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

ip -n dst addr add 198.18.201.2/30 dev dst0
ip -n dst addr add fd00:201::2/64 dev dst0 nodad
# A second destination address, taken away by the test to raise an alert.
ip -n dst addr add fd00:201::3/64 dev dst0 nodad
ip -n dst link set lo up
ip -n dst link set dst0 up
ip -n dst route add default via 198.18.201.1
ip -n dst -6 route add default via fd00:201::1
echo "vm lab: r1 and dst up"
