"""Reading one image file: the PIL modes accepted, `read_image` (any file -> 8-bit RGB, errors
name the file) and `BadInputError` (every bad input of a run, found before training, in one error).

The small module below both datasets.py (the layouts) and cache.py (decoding), which read images.
"""
from __future__ import annotations

import contextlib
import contextvars
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from safehil.core.utils import InputError, log

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

DEFAULT_MAX_IMAGE_PIXELS = 50_000_000  # a 7000 x 7000 frame; decoding costs 3 bytes per pixel and thread
# The limit of the running script (--max_image_pixels): a context, set for a block by `pixel_limit`
# (utils.run_main enters it from the config), never a global rebound by whoever runs last.
_PIXEL_LIMIT: contextvars.ContextVar[int] = contextvars.ContextVar("max_image_pixels",
                                                                   default=DEFAULT_MAX_IMAGE_PIXELS)


@contextlib.contextmanager
def pixel_limit(limit: int):
    """Within the block, images with more than `limit` pixels are bad input (`read_image`). Threads
    started inside it see the limit when they run in a copy of this context (cache.py does)."""
    token = _PIXEL_LIMIT.set(int(limit))
    try:
        yield
    finally:
        _PIXEL_LIMIT.reset(token)


def max_image_pixels() -> int:
    """The pixel limit in force here (`pixel_limit`; DEFAULT_MAX_IMAGE_PIXELS outside any)."""
    return _PIXEL_LIMIT.get()


EXIF_ORIENTATION = 0x0112  # the EXIF tag of how the stored pixels must be turned for display
MIN_IMAGE_SIDE = 8  # a smaller side has too few pixels to show a defect; resizing would invent them
SLIVER_ASPECT = 10  # longer side / shorter side above this: a square centre crop sees under 1/10 of the image


def size_problem(width: int, height: int) -> str | None:
    """Why an image of width x height pixels is refused before decoding (a side under
    MIN_IMAGE_SIDE, or more pixels than the limit), or None.
    PIL's own decompression-bomb check still refuses an image above 2 x PIL.Image.MAX_IMAGE_PIXELS
    (about 179 million pixels) whatever the limit (read_image names --max_image_pixels there too)."""
    if min(width, height) < MIN_IMAGE_SIDE:
        return (f"image too small: {width} x {height} pixels, a side below {MIN_IMAGE_SIDE} px (resizing it would "
                "invent the pixels the model scores); remove it or use the full-size original")
    limit = max_image_pixels()
    if width * height <= limit:
        return None
    return (f"image too large: {width} x {height} = {width * height:,} pixels, above the limit of "
            f"{limit:,} (--max_image_pixels; raise it if such images are expected, or downscale the file)")


# Modes that convert to 8-bit RGB without losing or inventing grey levels (alpha is dropped).
ACCEPTED_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX")


def image_mode_problem(mode: str) -> str | None:
    """Why a PIL image mode cannot go into the 8-bit RGB cache unchanged, or None when it can.

    'Wrong mode' means a conversion that would silently change the data: 16/32-bit and float
    images (PIL clips every value above 255, so a 16-bit frame turns almost white) and
    colour spaces that need a profile (CMYK, LAB, HSV, YCbCr).
    """
    if mode in ACCEPTED_MODES:
        return None
    if mode.startswith("I;16") or mode == "I":
        bits = "16-bit" if mode.startswith("I;16") else "32-bit integer"
        return (f"wrong image mode: {bits} grayscale (mode {mode}); the 8-bit cache would clip every value "
                "above 255. Convert it to 8 bit first (scale by 255 / the sensor's maximum)")
    if mode == "F":
        return ("wrong image mode: 32-bit float (mode F); the 8-bit cache would clip it to 0-255. "
                "Convert it to 8 bit first")
    if mode == "CMYK":
        return ("wrong image mode: CMYK (a print colour space); converting it without its colour profile "
                "changes the grey levels. Save it as grayscale or RGB")
    return f"wrong image mode: {mode}; use 8-bit grayscale or RGB (modes {', '.join(ACCEPTED_MODES)})"


def read_image(path: str | Path) -> Image.Image:
    """Open an image file as 3-channel RGB (grayscale is replicated); errors name the file.

    Raises FileNotFoundError for a missing file and InputError (a ValueError) for an
    unreadable, empty, truncated or corrupt file, for a wrong mode (`image_mode_problem`) and
    for more pixels than the limit (`size_problem`, read from the header before decoding).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:  # reads only the header: size and mode
            problem = size_problem(*img.size) or image_mode_problem(img.mode)
            if problem is None:
                img.load()
                # the orientation a viewer (and Label Studio) shows: camera JPEGs store it as an EXIF tag
                if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
                    return ImageOps.exif_transpose(img).convert("RGB")
                return img.convert("RGB")
    except PermissionError:
        raise InputError(f"{path}: cannot open the file (permission denied)") from None
    except UnidentifiedImageError:
        what = "empty file (0 bytes)" if path.stat().st_size == 0 else \
            "not an image (unknown format or a corrupt header)"
        raise InputError(f"{path}: {what}") from None
    except Image.DecompressionBombError as e:  # PIL refused it in the header already
        raise InputError(f"{path}: image too large: {e} (--max_image_pixels)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"{path}: cannot decode image: the file is truncated or corrupt "
                         f"({type(e).__name__}: {e})") from None
    raise InputError(f"{path}: {problem}")


def kept_share(width: int, height: int, canvas_aspect: float = 1.0) -> float:
    """The share of an image a crop to a canvas of aspect `canvas_aspect` (width / height) keeps,
    which is also the share of the canvas a whole or letterboxed image fills: min / max of the
    two aspect ratios."""
    aspect = width / height
    return min(aspect, canvas_aspect) / max(aspect, canvas_aspect)


def slivers(paths, canvas_aspect: float = 1.0) -> list[tuple[str, int, int]]:
    """(path, width, height) of each image the geometry reduces to a sliver: `kept_share` under
    1 / SLIVER_ASPECT (read from the headers only; unreadable files are the decoder's to report)."""
    found = []
    for path in paths:
        try:
            with Image.open(path) as img:
                w, h = img.size
        except (OSError, ValueError, SyntaxError):
            continue
        if min(w, h) and kept_share(w, h, canvas_aspect) < 1 / SLIVER_ASPECT:
            found.append((str(path), w, h))
    return found


def warn_slivers(paths, canvas_aspect: float = 1.0) -> list[tuple[str, int, int]]:
    """Log one warning with the share of `paths` that are slivers (`slivers`): a square crop of a
    5000 x 40 strip scores 0.8 % of it, a letterboxed one fills 0.8 % of the square. Returns them."""
    found = slivers(paths, canvas_aspect)
    if found:
        path, w, h = found[0]
        log(f"warning: {len(found)} of {len(paths)} images ({100 * len(found) / max(len(paths), 1):.1f} %) have an "
            f"aspect ratio more than {SLIVER_ASPECT}x off the model's input; it scores only a sliver of them (e.g. "
            f"{path}, {w} x {h}: {100 * kept_share(w, h, canvas_aspect):.1f} %); cut them into tiles first")
    return found


class BadInputError(InputError):
    """One or more bad inputs, all found before training; `.problems` lists {'path', 'problem'}."""

    def __init__(self, problems: list[dict], shown: int = 20):
        self.problems = list(problems)
        lines = [f"{p['path']}: {p['problem']}" for p in self.problems[:shown]]
        if len(self.problems) > shown:
            lines.append(f"... and {len(self.problems) - shown} more")
        hint = "(fix or remove them, or skip them with --skip_bad_images True)"
        if len(self.problems) == 1:
            message = f"{lines[0]} {hint}"
        else:
            message = f"{len(self.problems)} bad inputs {hint}:\n  " + "\n  ".join(lines)
        super().__init__(message)
