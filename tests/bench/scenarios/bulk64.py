"""Scenario "bulk64": bulk throughput on 64 connections at once (see bulk1)."""
import bulk1

NAME = "bulk64"
TITLE = "Bulk throughput, 64 connections"
ORDER = 20
ROWS = bulk1.ROWS


def run(ctx):
    return bulk1.run(ctx, conns=64)
