"""mlcodec: learned image compression for machine-vision dataset pipelines."""

from mlcodec.bitstream import BitstreamError
from mlcodec.codecs.base import DEFAULT_QUALITY, Codec, CodecConfig
from mlcodec.registry import DEFAULT_CODEC, codec_config, codec_for, create_codec, list_codecs

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CODEC",
    "DEFAULT_QUALITY",
    "BitstreamError",
    "Codec",
    "CodecConfig",
    "codec_config",
    "codec_for",
    "create_codec",
    "list_codecs",
]
