"""Recognise audio containers by their first bytes."""

from __future__ import annotations

from enum import StrEnum


class Container(StrEnum):
    WAV = "WAV"
    FLAC = "FLAC"
    OGG = "OGG"


def sniff_container(data: bytes) -> Container | None:
    """The container whose header starts `data`, or None for headerless (raw) audio."""
    if len(data) >= 12 and data[:4] in (b"RIFF", b"RIFX") and data[8:12] == b"WAVE":
        return Container.WAV
    if data[:4] == b"fLaC":
        return Container.FLAC
    if data[:4] == b"OggS":
        return Container.OGG
    return None
