"""Generated media for the task tests: colour-changing videos (PyAV) and spoken questions (espeak-ng)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

__all__ = ["write_colour_video", "write_speech"]


def write_colour_video(path: Path, segments: list[tuple[tuple[int, int, int], float]], fps: int = 10,
                       size: int = 64) -> Path:
    """An H.264 (or MPEG-4) video: each (rgb, seconds) segment is a solid colour for that long."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for rgb, seconds in segments:
            frame_rgb = np.zeros((size, size, 3), dtype=np.uint8)
            frame_rgb[:] = rgb
            for _ in range(round(seconds * fps)):
                frame = av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_speech(path: Path, text: str, voice: str = "en-us") -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return path
