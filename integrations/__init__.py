"""Thin adapters to outside libraries (``mlcodec.integrations``): one module per library."""
