"""The bundle: what export hands to the device (docs/bundle.md).

``schema`` owns the whole ``bundle.json`` format (typed sections, validation); ``store`` the
directory on disk (loading, hashes, atomic saves). Import the names from here.
"""

from .schema import (
    FORMAT,
    FORMAT_MAJOR,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EngineEntry,
    ModelSpec,
    MorphologySpec,
    PreprocessSpec,
    ReferenceSpec,
    SamRefineSpec,
    TilingSpec,
    TttRefineSpec,
    VerdictSpec,
)
from .store import Bundle, create_bundle, sha256_file

__all__ = ["Bundle", "create_bundle", "sha256_file", "FORMAT", "FORMAT_MAJOR", "IMAGENET_MEAN",
           "IMAGENET_STD", "EngineEntry", "ModelSpec", "MorphologySpec", "PreprocessSpec", "ReferenceSpec",
           "SamRefineSpec", "TilingSpec", "TttRefineSpec", "VerdictSpec"]
