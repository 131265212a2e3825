"""What an image reference may be and how large it may get: :class:`ImagePolicy`.

The default policy is the safe one a server uses: http(s) URLs only to public addresses, data URLs,
base64 and raw bytes; no local files. The CLI widens it with :meth:`ImagePolicy.for_cli`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from pydantic import Field, field_validator

from moesaic.config import FrozenModel
from moesaic.inputs.shape import DEFAULT_MAX_ASPECT, DEFAULT_MAX_SIDE

__all__ = ["ImagePolicy", "DEFAULT_FORMATS", "MiB"]

MiB = 1024 * 1024

# Decoders allowed by default: common photo formats with well-exercised decoders in Pillow. Formats such as
# EPS (runs Ghostscript), PSD, FITS or DDS are left out; add them to ``formats`` only if you need them.
DEFAULT_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "PPM", "AVIF")


class ImagePolicy(FrozenModel):
    """Limits and permissions applied by :func:`moesaic.inputs.images.load_image`.

    ``allow_private_hosts`` lists host names (``"localhost"``) or addresses/CIDRs (``"127.0.0.1"``,
    ``"10.0.0.0/8"``) that may be fetched although they are loopback, private, link-local or otherwise not
    public. ``allow_hosts``, when not empty, restricts URLs to those host names (``"example.com"``; a leading
    ``"."`` or ``"*."`` also admits sub-domains). Local paths are read only when ``allow_local_paths`` is set
    (anywhere) or when ``allowed_folders`` is not empty (then only files inside those folders, after
    resolving symlinks and ``..``).
    """

    allow_private_hosts: frozenset[str] = frozenset()
    allow_hosts: frozenset[str] = frozenset()
    allow_local_paths: bool = False
    allowed_folders: tuple[Path, ...] = ()
    max_bytes: int = Field(default=20 * MiB, gt=0, description="largest encoded image accepted")
    max_pixels: int = Field(default=50_000_000, gt=0, description="largest width*height accepted")
    max_side: int = Field(
        default=DEFAULT_MAX_SIDE, ge=16, description="longest side after decoding; longer images are downscaled"
    )
    max_aspect_ratio: float = Field(
        default=DEFAULT_MAX_ASPECT, ge=1.0, description="long/short side after decoding; thinner images are padded"
    )
    timeout_s: float = Field(default=10.0, gt=0, description="total time for one URL, redirects included")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="time to open one TCP/TLS connection")
    max_redirects: int = Field(default=3, ge=0)
    target_size: int | None = Field(
        default=None, gt=0, description="side the model resizes to; JPEGs ≥2× larger decode at reduced scale"
    )
    formats: tuple[str, ...] = DEFAULT_FORMATS
    ca_bundle: Path | None = Field(
        default=None, description="PEM file of CA certificates trusted for https image URLs (default: certifi's)"
    )

    @field_validator("allow_private_hosts", "allow_hosts", mode="before")
    @classmethod
    def _as_set(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple, set, frozenset)):
            return frozenset(str(v).strip().lower().rstrip(".") for v in value if str(v).strip())
        return value

    @field_validator("allow_private_hosts")
    @classmethod
    def _valid_private_entries(cls, value: frozenset[str]) -> frozenset[str]:
        for entry in value:
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is neither a host name nor a valid CIDR like 10.0.0.0/8") from None
        return value

    @field_validator("formats", mode="before")
    @classmethod
    def _upper_formats(cls, value: object) -> object:
        if isinstance(value, (list, tuple, set, frozenset)):
            return tuple(str(v).upper() for v in value)
        return value

    @field_validator("allowed_folders", mode="before")
    @classmethod
    def _folders(cls, value: object) -> object:
        if isinstance(value, (str, Path)):
            value = [value]
        return value

    @property
    def local_paths_enabled(self) -> bool:
        return self.allow_local_paths or bool(self.allowed_folders)

    @classmethod
    def for_cli(cls, **overrides: object) -> "ImagePolicy":
        """The command line's policy: the user's own files are fine; remote URLs stay public-only."""
        return cls.model_validate({"allow_local_paths": True, **overrides})

    @classmethod
    def for_server(cls, allowed_folders: list[Path] | tuple[Path, ...] = (), **overrides: object) -> "ImagePolicy":
        """A server's policy: no local files unless folders are allow-listed, then only inside them."""
        return cls.model_validate({"allow_local_paths": False, "allowed_folders": tuple(allowed_folders), **overrides})
