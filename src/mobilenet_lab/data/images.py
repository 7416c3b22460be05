"""Reading one image file, the one way every reader of the kit does it (predict, image folders,
and so int8 calibration): pixels at their real range, as the 8-bit grey or RGB image the
networks are trained on, or a one-line reason why not.

Pillow's ``convert("L")`` clips a 16-bit image to 0/255 instead of scaling it, so the modes
that hold more than 8 bits are scaled here (docs/data.md, "How image files are read"):

- ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` (16-bit PNG, TIFF): divided by 65,535;
- ``I`` (32-bit integers: Pillow's mode for 16-bit PGM files, for 16-bit PNGs in older
  Pillows, and for 32-bit integer TIFFs): divided by the depth's largest value, that a TIFF
  declares (2^31 - 1 for signed 32-bit), else 65,535;
- a value outside the depth's range (negative, or over 65,535 in a file that declares no
  depth) is refused;
- ``F`` (32-bit float TIFF): read as 0-1; a value outside 0-1 (or NaN) is refused, not clipped.

Then rounded to 8 bits (a 16-bit image and its 8-bit twin give the same pixels). The 8-bit
modes are converted by Pillow; any other mode is refused by name.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib

import numpy as np
from PIL import Image

# Pillow converts these to L and RGB itself, at their real range
EIGHT_BIT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
READ_MODES = (*EIGHT_BIT_MODES, *SIXTEEN_BIT_MODES, "I", "F")
TIFF_BITS_PER_SAMPLE, TIFF_SAMPLE_FORMAT = 258, 339
# what Pillow raises for a file it cannot decode (UnidentifiedImageError is an OSError)
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_pixel_limit_lock = threading.Lock()  # Image.MAX_IMAGE_PIXELS is lifted while a header is read


class UnreadableImage(ValueError):
    """A file that is not read as an image; the message is the reason, without the path."""


def pillow_pixel_limit() -> int:
    """The size Pillow refuses to open: over twice ``Image.MAX_IMAGE_PIXELS`` (it warns over
    ``MAX_IMAGE_PIXELS`` itself); 0 when the limit is turned off."""
    return 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else 0


def open_image(
    path: str | os.PathLike, channels: int, max_pixels: int | None = None,
    setting: str = "max_image_pixels",
) -> Image.Image:  # fmt: skip
    """The decoded image as 8-bit ``L`` (``channels=1``) or ``RGB`` (3). ``max_pixels``: the
    largest image read, ``None`` for Pillow's limit; an image over it is refused naming its
    size and ``setting``, the key that would allow it. Raises ``UnreadableImage``."""
    limit = pillow_pixel_limit() if max_pixels is None else max_pixels
    try:
        with _pixel_limit_lock:  # checked below, where the message can name the file's size
            pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = pillow_limit
        with image:
            width, height = image.size
            if limit and width * height > limit:
                whose = "Pillow's limit" if max_pixels is None else f"{setting}"
                raise UnreadableImage(
                    f"{width} x {height} = {width * height:,} pixels, over {whose} of {limit:,}: "
                    f"set {setting}={width * height} to read it"
                )
            return _eight_bit(image, "L" if channels == 1 else "RGB")
    except DECODE_ERRORS as error:
        if isinstance(error, UnreadableImage):
            raise
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise UnreadableImage(f"not a readable image ({reason})") from error


def _integer_top(image: Image.Image) -> int:
    """The white of an integer image: 65,535, or for mode ``I`` the largest value of the depth
    a TIFF declares (BitsPerSample, SampleFormat signed or not)."""
    tags = getattr(image, "tag_v2", {}) if image.mode == "I" else {}
    bits = tags.get(TIFF_BITS_PER_SAMPLE, 16)
    bits = int(bits[0] if isinstance(bits, tuple) else bits)
    signed = tags.get(TIFF_SAMPLE_FORMAT) in (2, (2,))
    return 2 ** (bits - signed) - 1


def _eight_bit(image: Image.Image, mode: str) -> Image.Image:
    """``image`` decoded and converted to ``mode`` at its real range (module docstring)."""
    if image.mode in EIGHT_BIT_MODES:
        return image.convert(mode)
    if image.mode not in READ_MODES:
        raise UnreadableImage(
            f"its mode {image.mode} is not read (read modes: {', '.join(READ_MODES)}): "
            "save it as 8- or 16-bit grey or RGB"
        )
    pixels = np.asarray(image)
    if image.mode == "F":
        low, high = float(np.min(pixels)), float(np.max(pixels))
        if not (low >= 0.0 and high <= 1.0):  # NaN fails both comparisons
            raise UnreadableImage(
                f"its float (mode F) pixels span {low:g} to {high:g}: float images are read as "
                "0-1; scale it to 0-1 or save it as 8- or 16-bit"
            )
        scaled = pixels
    else:
        top = _integer_top(image)
        low, high = int(np.min(pixels)), int(np.max(pixels))
        if low < 0 or high > top:
            raise UnreadableImage(
                f"its integer (mode {image.mode}) pixels span {low} to {high}, outside the "
                f"0-{top} its depth allows: save it as 8- or 16-bit"
            )
        scaled = pixels.astype(np.float64) / top
    grey = Image.fromarray(np.round(scaled * 255).astype(np.uint8))
    return grey.convert(mode)
