"""Which bundle evaluates which product: the ``--bundle`` values (``PATH`` or ``PRODUCT=PATH``) and
their matching to the dataset's products."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sdk.errors import InputError
from sdk.vocabulary import parse_product_bundle

from .datasets import Product

BundleSpec = tuple[str | None, Path]


def parse_bundle_specs(values: Iterable[str]) -> list[BundleSpec]:
    """``--bundle`` values: ``PATH`` or ``PRODUCT=PATH`` (``sdk.vocabulary.parse_product_bundle``)."""
    out: list[BundleSpec] = []
    for v in values:
        try:
            name, path = parse_product_bundle(v, path_exists=lambda s: Path(s).exists())
        except ValueError as exc:
            raise InputError(str(exc)) from None
        out.append((name, Path(path)))
    return out


def bundle_for(product: Product, specs: list[BundleSpec], names: dict[Path, str]) -> Path:
    """The bundle of ``product``: the only one given without a product, else the one given for it,
    else one given without a product whose bundle name (``names``) is the product's."""
    if len(specs) == 1 and specs[0][0] is None:
        return specs[0][1]
    for name, path in specs:
        if name == product.name:
            return path
    for name, path in specs:
        if name is None and names[path] == product.name:
            return path
    raise InputError(f"no bundle for product {product.name!r}: pass --bundle {product.name}=PATH (or one "
                     "bundle for all products)")
