"""Dataset layouts with pixel ground truth: MVTec AD 2, MVTec AD, and image/mask pairs.

A dataset is one or several *products*, each a list of samples (image file, ground-truth mask
file or None for a part known to be defect-free). Nothing is read here but directory listings;
``read_ground_truth`` reads one mask when it is needed.

Layouts (``DIR`` is the folder given to ``--dataset``; it may be one product or a folder of
products for both MVTec layouts):

- ``mvtec_ad2``: ``<product>/<split>/good/*.png`` (defect-free), ``<product>/<split>/bad/*.png``
  with ``<product>/<split>/ground_truth/bad/<name>_mask.png``. Splits with ground truth or
  defect-free by definition: ``test_public`` (default), ``validation``, ``train``; the private
  test splits have no public ground truth and are refused.
- ``mvtec_ad``: ``<product>/<split>/<type>/*.png`` (``good`` = defect-free) with
  ``<product>/ground_truth/<type>/<name>_mask.png``; split ``test`` (default) or ``train``.
- ``pairs``: every image under DIR (any nesting) with a same-named ``.png`` mask beside it
  (``part.jpg`` + ``part.png``), or ``<name>_mask.png``; magnetic_tile is of this kind. The whole
  folder (or ``DIR/<split>`` with ``--split``) is one product named after the folder. An image
  without a mask is an error: the ground truth of a defect-free part is an empty mask.

Ground truth: a pixel is a defect when its mask value is > 127 (masks are read as 8-bit gray).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sdk.errors import InputError
from sdk.imageio import IMAGE_EXTS, find_files
from sdk.vocabulary import DATASET_LAYOUTS

LAYOUTS = tuple(x for x in DATASET_LAYOUTS if x != "auto")  # the concrete ones
DEFAULT_SPLIT = {"mvtec_ad2": "test_public", "mvtec_ad": "test", "pairs": None}
AD2_SPLITS = ("train", "validation", "test_public", "test_private", "test_private_mixed")
AD2_PRIVATE = ("test_private", "test_private_mixed")
GOOD = "good"


@dataclass(frozen=True)
class Sample:
    """One image of a product and its ground truth."""

    image: Path
    mask: Path | None  # None: defect-free by the layout (an empty mask)
    name: str  # relative name without suffix, unique in the product (used for output files)
    group: str  # "good", "bad", the defect type, or the top folder (pairs)


@dataclass
class Product:
    """One product (one bundle) of a dataset split."""

    name: str
    root: Path
    layout: str
    split: str | None
    samples: list[Sample] = field(default_factory=list)

    @property
    def groups(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.samples:
            out[s.group] = out.get(s.group, 0) + 1
        return out


def read_ground_truth(sample: Sample, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The defect mask (bool, H×W) of a sample; an all-false ``shape`` mask for a defect-free
    sample without a mask file (``shape``: the image's height and width)."""
    if sample.mask is None:
        if shape is None:
            raise InputError(f"{sample.image}: no ground-truth file and no image size given")
        return np.zeros(shape, bool)
    data = np.fromfile(str(sample.mask), dtype=np.uint8) if sample.mask.is_file() else None
    if data is None or data.size == 0:
        raise InputError(f"{sample.mask}: ground-truth mask missing or empty")
    m = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise InputError(f"{sample.mask}: not a readable mask image")
    return m > 127


def _is_ad2_product(d: Path) -> bool:
    return any((d / s).is_dir() for s in AD2_SPLITS if s != "train")  # MVTec AD has train/ too


def _is_ad_product(d: Path) -> bool:
    return (d / "test").is_dir() and ((d / "ground_truth").is_dir() or (d / "train").is_dir())


def _subdirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def detect_layout(root: Path) -> str:
    """The layout of ``root`` (a product or a folder of products); InputError when none fits."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a directory")
    candidates = [root, *_subdirs(root)]
    if any(_is_ad2_product(d) for d in candidates):
        return "mvtec_ad2"
    if any(_is_ad_product(d) for d in candidates):
        return "mvtec_ad"
    images = [p for p in find_files(root, IMAGE_EXTS) if _mask_of(p) is not None]
    if images:
        return "pairs"
    raise InputError(f"{root}: no known dataset layout (MVTec AD 2: <product>/test_public/...; MVTec AD: "
                     "<product>/test + ground_truth; pairs: image + same-named .png mask); pass --layout")


def _mvtec_products(root: Path, is_product, what: str, hint: str) -> list[Path]:
    if is_product(root):
        return [root]
    found = [d for d in _subdirs(root) if is_product(d)]
    if not found:
        raise InputError(f"{root}: no {what} product here ({hint})")
    return found


def _typed_samples(split_dir: Path, gt_root: Path) -> list[Sample]:
    """Samples of ``split_dir/<type>/...``: ``good`` without mask, other types with
    ``gt_root/<type>/<name>_mask.png``."""
    samples: list[Sample] = []
    missing: list[Path] = []
    for tdir in _subdirs(split_dir):
        if tdir.name == "ground_truth":
            continue
        for img in find_files(tdir, IMAGE_EXTS):
            rel = img.relative_to(tdir).with_suffix("")
            mask = None
            if tdir.name != GOOD:
                mask = gt_root / tdir.name / f"{rel.as_posix()}_mask.png"
                if not mask.is_file():
                    missing.append(mask)
                    continue
            samples.append(Sample(img, mask, f"{tdir.name}/{rel.as_posix()}", tdir.name))
    if missing:
        raise InputError(f"{len(missing)} defective image(s) under {split_dir} have no ground truth, "
                         f"e.g. {missing[0]} is missing")
    return samples


def _mask_of(img: Path) -> Path | None:
    """The mask of a pairs-layout image, or None (also for files that are masks themselves)."""
    if img.stem.endswith("_mask"):
        return None
    if img.suffix.lower() != ".png":
        same = img.with_suffix(".png")
        if same.is_file():
            return same
    named = img.with_name(f"{img.stem}_mask.png")
    return named if named.is_file() else None


def _pairs_samples(root: Path) -> list[Sample]:
    files = find_files(root, IMAGE_EXTS)
    stems_with_image: set[Path] = {p.with_suffix("") for p in files if p.suffix.lower() != ".png"}
    samples, missing = [], []
    for img in files:
        if img.stem.endswith("_mask") or (img.suffix.lower() == ".png" and img.with_suffix("") in
                                          stems_with_image):
            continue  # a mask
        mask = _mask_of(img)
        if mask is None:
            missing.append(img)
            continue
        rel = img.relative_to(root)
        group = rel.parts[0] if len(rel.parts) > 1 else "."
        samples.append(Sample(img, mask, rel.with_suffix("").as_posix(), group))
    if missing:
        raise InputError(f"pairs layout: {len(missing)} image(s) under {root} have no mask (a same-named "
                         ".png or <name>_mask.png; a defect-free part needs an empty mask), "
                         f"e.g. {missing[0]}")
    return samples


def _subset(samples: list[Sample], max_images: int | None) -> list[Sample]:
    """An evenly spaced subset of the sorted samples (keeps the mix of groups)."""
    if max_images is None or max_images >= len(samples):
        return samples
    if max_images <= 0:
        raise InputError("--max-images must be positive")
    n = len(samples)
    return [samples[i * n // max_images] for i in range(max_images)]


def load_dataset(root: str | Path, layout: str = "auto", split: str | None = None,
                 products: list[str] | None = None, max_images: int | None = None) -> list[Product]:
    """The products of a dataset split, each with its samples in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--dataset {root} is not a directory")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    split = split or DEFAULT_SPLIT[layout]
    out: list[Product] = []
    if layout == "mvtec_ad2":
        if split in AD2_PRIVATE:
            raise InputError(f"split {split!r} has no public ground truth; evaluate test_public (or the "
                             "defect-free train / validation)")
        for d in _mvtec_products(root, _is_ad2_product, "MVTec AD 2",
                                 "expected <product>/test_public/{good,bad,ground_truth/bad}"):
            split_dir = d / split
            if not split_dir.is_dir():
                raise InputError(f"{d}: no split {split!r} (found: "
                                 f"{', '.join(p.name for p in _subdirs(d)) or 'nothing'}); "
                                 "choose one with --split")
            samples = _typed_samples(split_dir, split_dir / "ground_truth")
            out.append(Product(d.name, d, layout, split, samples))
    elif layout == "mvtec_ad":
        for d in _mvtec_products(root, _is_ad_product, "MVTec AD",
                                 "expected <product>/test/<type> and <product>/ground_truth/<type>"):
            split_dir = d / split
            if not split_dir.is_dir():
                found = [x.name for x in _subdirs(d) if x.name != "ground_truth"]
                raise InputError(f"{d}: no split {split!r} (found: {', '.join(found) or 'nothing'}); "
                                 "choose one with --split")
            out.append(Product(d.name, d, layout, split, _typed_samples(split_dir, d / "ground_truth")))
    else:
        base = root / split if split else root
        if not base.is_dir():
            found = [x.name for x in _subdirs(root)] if root.is_dir() else []
            raise InputError(f"{base} is not a directory (--split of a pairs dataset is a sub-folder; found: "
                             f"{', '.join(found) or 'none'})")
        out.append(Product(root.name, base, layout, split, _pairs_samples(base)))
    if products:
        names = {p.name for p in out}
        unknown = [n for n in products if n not in names]
        if unknown:
            raise InputError(f"product(s) {', '.join(unknown)} not in {root} "
                             f"(found: {', '.join(sorted(names))})")
        out = [p for p in out if p.name in products]
    for p in out:
        p.samples = _subset(p.samples, max_images)
        if not p.samples:
            raise InputError(f"product {p.name!r}: no images in {p.root / (p.split or '')}")
    return out
