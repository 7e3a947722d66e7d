"""lipkit hook implementations of the InfiniteTalk plugin (entry point ``infinitetalk``).

Nothing is registered yet: the package has the transformer and its loaders
(:mod:`lipkit_infinitetalk.model`, :mod:`lipkit_infinitetalk.checkpoint`); the ``infinitetalk``
generator, with its wav2vec2 audio encoder, comes next. Until then ``lipkit plugins`` lists this
plugin with no hooks.
"""
