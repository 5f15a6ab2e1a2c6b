"""``medad validate``: check a protocol without running it.

Three levels of checking, each raising :class:`~medad.errors.ConfigError` with the file, line, key and fix:

1. structure (:mod:`medad.protocols.loading`, :mod:`medad.protocols.structure`): the YAML parses safely, every
   key is known (the closest valid key is suggested), types and ranges are right, names are unique,
   cross-references (synthetic sources, comparisons, exports, class words) point at things that exist, dataset
   kinds / models / metrics / exporters are registered, and training data does not overlap a target unless
   ``intended_overlap`` is set; model options fit the model's config and backbone (image size a multiple of the
   patch size, ...) and export thresholds parse and are possible;
2. resources (:mod:`medad.protocols.resources`): environment variables are set, data roots, weight files and
   checkpoints exist, ``output:`` can be a writable folder; everything missing is listed at once with where
   the docs say to get it;
3. at run time, after the data stage and before any training, class words name classes the data has
   (:func:`~medad.protocols.structure.check_data_settings`), and the runner compares training and target files
   by sha256 (the leakage guard).
"""

from __future__ import annotations

from pathlib import Path

from medad.protocols.loading import LoadedProtocol, load_protocol
from medad.protocols.resources import require_resources


def validate_protocol(
    path: str | Path, *, structure_only: bool = False, overrides: list[str] | tuple[str, ...] = ()
) -> LoadedProtocol:
    """Check a protocol without running it (what ``medad validate`` does).

    Args:
        path: the protocol YAML.
        structure_only: check only the YAML itself (keys, types, names, registries, static leakage guard);
            otherwise also that every data root, weight file and checkpoint exists.
        overrides: ``key.path=value`` settings applied first.

    Returns:
        The validated protocol.

    Raises:
        ConfigError: the first structural problem, or one message listing every missing resource.
    """
    lp = load_protocol(path, overrides)
    if not structure_only:
        require_resources(lp)
    return lp
