"""Subcommands of the `vidiff` command, one module each."""
