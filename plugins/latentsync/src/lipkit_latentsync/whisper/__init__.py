"""Whisper tiny as LatentSync uses it: log-mel, encoder hidden states, per-frame windows.

- :mod:`.mel`: Whisper's log-mel spectrogram (100 frames/s), block by block;
- :mod:`.model`: the encoder module with OpenAI's parameter names;
- :mod:`.checkpoint`: strict, safe loading of OpenAI's ``tiny.pt`` (or ``.safetensors``);
- :mod:`.features`: overlapping 30 s windows and the 50 x 384 tokens of each video frame;
- :mod:`.encoder`: the ``whisper-tiny`` :class:`lipkit.interfaces.AudioEncoder`.
"""
