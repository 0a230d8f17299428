"""Drivers that launch and observe student submissions."""
