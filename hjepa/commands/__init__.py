"""Subcommands of the ``hjepa`` console script, one module each.

Each module exposes ``register(subparsers)`` which adds its parser and sets ``func`` (called
with the parsed namespace, returns the exit code).
"""
