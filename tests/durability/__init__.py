"""Durability suite: worker processes killed, Redis restarted or unreachable, bad input."""
