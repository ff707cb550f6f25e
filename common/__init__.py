"""Plumbing shared by every part of the project (atomic writes, versions, the machine)."""
