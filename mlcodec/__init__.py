"""mlcodec: learned image compression for machine-vision dataset pipelines."""

import warnings

# CompressAI decorates functions with torch.jit.script at import, which torch 2.10+ reports as
# deprecated, once per process (and so once per DataLoader or shard worker): noise for users, and
# nothing they can act on. Only that one message is filtered.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)

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
