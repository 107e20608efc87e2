"""Recognise audio containers by their first bytes."""

from __future__ import annotations

from enum import StrEnum


class Container(StrEnum):
    WAV = "WAV"
    FLAC = "FLAC"
    OGG = "OGG"
    MP3 = "MP3"
    MP4 = "MP4"
    WEBM = "WebM"


COMPRESSED = (Container.MP3, Container.MP4, Container.WEBM)  # decoded by FFmpeg (PyAV), not libsndfile


def sniff_container(data: bytes) -> Container | None:
    """The container whose header starts `data`, or None for headerless (raw) audio."""
    if len(data) >= 12 and data[:4] in (b"RIFF", b"RIFX") and data[8:12] == b"WAVE":
        return Container.WAV
    if data[:4] == b"fLaC":
        return Container.FLAC
    if data[:4] == b"OggS":
        return Container.OGG
    if data[:3] == b"ID3" or (len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):  # a tag, or a frame
        return Container.MP3
    if data[4:8] == b"ftyp":
        return Container.MP4
    if data[:4] == b"\x1a\x45\xdf\xa3":  # EBML: WebM and Matroska
        return Container.WEBM
    return None
