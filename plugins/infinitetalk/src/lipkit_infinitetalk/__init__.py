"""InfiniteTalk backend for lipkit. So far: the transformer (diffusers' Wan2.1 I2V model with
InfiniteTalk's audio modules, :mod:`lipkit_infinitetalk.model`) and its strict safetensors/GGUF
loaders (:mod:`lipkit_infinitetalk.checkpoint`); the generator joining them comes next."""

__version__ = "0.1.0"
