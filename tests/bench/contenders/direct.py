"""Contender "direct": no proxy and no capture rules; the client connects straight to the
server pod. The physical limit of this topology, and the baseline of every "x direct" ratio."""
NAME = "direct"
LABEL = "direct (no proxy)"
ORDER = 10
NOTE = "No sidecars, no iptables rules: client pod -> server pod over the lab bridge."


def available(env):
    return True, ""


class Handle:
    version = "-"

    def pids(self):
        return {}

    def counters(self):
        return {}

    def traffic_keys(self):
        return []

    def stop(self):
        pass


def start(env):
    return Handle()
