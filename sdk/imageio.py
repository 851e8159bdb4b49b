"""Reading frames and anomaly maps from files, writing masks. Errors are typed InputErrors."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAP_EXTS = (".tif", ".tiff", ".npy")


def find_files(root: str | os.PathLike, exts: tuple[str, ...]) -> list[Path]:
    """Files under ``root`` (any nesting) with one of ``exts``, sorted by relative path."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a directory")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def output_names(rels: list[Path], suffix: str = ".png") -> dict[Path, Path]:
    """Output names for input files (relative paths), never two the same (docs/cli.md, "Output
    names"): ``x.jpg`` → ``x.png``; when inputs of one folder share a stem (``x.jpg`` and ``x.png``),
    each of them keeps its extension: ``x.jpg.png``, ``x.png.png``. The rule depends only on the
    inputs, so the same folder gives the same names on every run."""
    names = {r: r.with_suffix(suffix) for r in rels}
    while True:
        seen: dict[str, list[Path]] = {}
        for r, out in names.items():
            seen.setdefault(out.as_posix(), []).append(r)
        clashes = [group for group in seen.values() if len(group) > 1]
        if not clashes:
            return names
        for group in clashes:
            for r in group:  # the full name with the extension is unique among distinct inputs
                names[r] = r.with_name(r.name + suffix)


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """A frame from an image file and its colour order: (array, 'gray' | 'bgr')."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None:
        raise InputError(f"{path}: no such file")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise InputError(f"{path}: not a readable image (corrupt or unsupported format)")
    if img.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: {img.dtype} images are not supported (8- or 16-bit only)")
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 2 or img.shape[2] == 1:
        return img.reshape(img.shape[:2]), "gray"
    return img, "bgr"


def read_map(path: str | os.PathLike) -> np.ndarray:
    """An anomaly map from a TIFF (float16/float32) or .npy file, as a 2-D array."""
    return _read_map(Path(path))[0]


def _read_map(p: Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    """:func:`read_map`'s array, and where a TIFF of one page keeps its pixels contiguously and
    uncompressed, ``(offset, bytes)`` (else None)."""
    span = None
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            import tifffile

            with tifffile.TiffFile(p) as tif:  # what tifffile.imread(p) does, keeping the page at hand
                arr = tif.asarray()
                page = tif.pages[0]
                if len(tif.pages) == 1 and page.is_contiguous:
                    span = int(page.dataoffsets[0]), int(sum(page.databytecounts))
    except Exception as exc:  # tifffile/numpy raise many types for bad files
        raise InputError(f"{p}: cannot read anomaly map ({exc})") from exc
    arr = np.squeeze(arr)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{p}: an anomaly map must be a 2-D float array, got {arr.dtype} {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{p}: the anomaly map is empty (shape {arr.shape})")
    return _finite(p, arr), span


def _finite(p: Path, arr: np.ndarray) -> np.ndarray:
    if not _all_finite(arr):
        raise InputError(f"{p}: the anomaly map holds NaN or infinite values (maps are on the 0..255 scale)")
    return arr


class MapReader:
    """:func:`read_map` for the many files of one folder. A TIFF laid out like the last one
    parsed (the same size and the same bytes outside its pixel data, as one writer's maps of one
    shape are) is read straight into its array with one system call: its tags are those of the
    parsed file, so it holds the same kind of array, at the same place. Anything else is parsed.
    Safe to call from several threads."""

    def __init__(self) -> None:
        self._layout: _TiffLayout | None = None

    def __call__(self, path: str | os.PathLike) -> np.ndarray:
        p = Path(path)
        tiff = p.suffix.lower() in (".tif", ".tiff")
        layout = self._layout
        if tiff and layout is not None:
            arr = layout.read(p)
            if arr is not None:
                return _finite(p, arr)
        arr, span = _read_map(p)
        if tiff and span is not None:
            self._layout = _TiffLayout.of(p, arr, span) or layout
        return arr

    def expected_size(self, path: str | os.PathLike) -> int | None:
        """The pixel count of the map in ``path`` if its file has the size of the layout learnt
        last (None: not known before reading it). A promise of the file's size only: reading
        the file tells."""
        layout = self._layout
        if layout is None or Path(path).suffix.lower() not in (".tif", ".tiff"):
            return None
        try:
            size = os.stat(path).st_size
        except OSError:
            return None
        return int(np.prod(layout.shape)) if size == layout.size else None


class _TiffLayout:
    """Where a parsed TIFF keeps its pixels, and its bytes around them."""

    def __init__(self, size: int, head: bytes, tail: bytes, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.size, self.head, self.tail, self.shape, self.dtype = size, head, tail, shape, dtype

    @classmethod
    def of(cls, p: Path, arr: np.ndarray, span: tuple[int, int]) -> _TiffLayout | None:
        """The layout of ``p``, whose parsed map is ``arr``, stored at ``span`` (offset, bytes);
        None unless those bytes are exactly ``arr``'s (native byte order, no conversion)."""
        off, n = span
        plain = arr.dtype.isnative and arr.flags.c_contiguous and n == arr.nbytes
        if not plain or not hasattr(os, "preadv"):  # preadv: not on Windows
            return None
        try:
            raw = p.read_bytes()
        except OSError:  # the map was read; only the shortcut is not available
            return None
        if off + n > len(raw) or raw[off:off + n] != arr.tobytes():
            return None
        return cls(len(raw), raw[:off], raw[off + n:], arr.shape, arr.dtype)

    def read(self, p: Path) -> np.ndarray | None:
        """The map in ``p`` if ``p`` has this layout (else None: parse it)."""
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size != self.size:
                return None
            arr = np.empty(self.shape, self.dtype)
            head, tail = bytearray(len(self.head)), bytearray(len(self.tail))
            got = os.preadv(fd, [head, arr.reshape(-1).view(np.uint8), tail], 0)
        except OSError:
            return None
        finally:
            os.close(fd)
        return arr if got == self.size and head == self.head and tail == self.tail else None


def _all_finite(arr: np.ndarray) -> bool:
    """No NaN or infinity; float16 by its bits (numpy's float16 arithmetic is slow)."""
    if arr.dtype == np.float16:
        from .postprocess.halfkeys import all_finite

        return all_finite(arr)
    return bool(np.isfinite(arr).all())


# Binary masks: no PNG row filter (they only blur the runs of 0 and 255) and run-length deflate,
# the fastest lossless settings on 0/255 masks, and smaller files than OpenCV's defaults.
MASK_PNG = ([cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE, cv2.IMWRITE_PNG_STRATEGY,
             cv2.IMWRITE_PNG_STRATEGY_RLE] if hasattr(cv2, "IMWRITE_PNG_FILTER") else [])


def write_png(path: str | os.PathLike, image: np.ndarray, params: list[int] | None = None) -> None:
    """Write a PNG, creating folders; atomic (temporary file + rename). ``params``: OpenCV's
    PNG settings (e.g. :data:`MASK_PNG` for 0/255 masks); None: OpenCV's defaults."""
    p = Path(path)
    ok, buf = cv2.imencode(".png", image, params or [])
    if not ok:
        raise InputError(f"cannot encode {p} as PNG")
    tmp = p.with_name(f".{p.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:  # the first file of its folder
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        try:
            view = memoryview(buf).cast("B")
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except OSError:
        tmp.unlink(missing_ok=True)  # no half-written temporary file is left behind
        raise


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a 0/255 mask as a PNG with :data:`MASK_PNG` (atomic, like :func:`write_png`)."""
    write_png(path, mask, MASK_PNG)
