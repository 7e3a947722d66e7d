"""Media I/O with the bundled ffmpeg: probing, lazy frame decoding, audio loading, MP4 output."""
