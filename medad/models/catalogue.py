"""Every built-in model's catalogue entry: importing this module imports each method's config module (no torch),
which registers its models (:func:`medad.models.registry.register_model`). A new method adds its config module
here."""

from medad.models import (  # noqa: F401
    aa_clip_config,
    ad_dinov3_config,
    adaclip_config,
    anomalyclip_config,
    anomalydino_config,
    crane_config,
    mutual_config,
    winclip_config,
)
