"""Codec implementations; build them through :func:`mlcodec.create_codec`."""
