"""Encrypted folder sync: the pure core (chunking, records, merge, plan) and the small disk
helpers (scan, apply). The daemon wires them to a group's feeds."""
