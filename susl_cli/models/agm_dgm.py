"""AGM-DGM: GM-DGM's generative model with ADGM's auxiliary variable (adgm.py).

Generative   p(x|z) p(a|x,z) p(z|y) p(y), p(z|y) = N(mu_y, diag exp(logvar_y)) as GM-DGM
Inference    q(a|x) q(y|a,x) q(z|a,x,y) as ADGM
p(a|x,z) leaves y out, as GM-DGM's p(x|z) does: the label reaches the generative side only
through the mixture prior p(z|y), so a cannot become a second channel for the component
(the M2-style shortcut the mixture prior is there to remove); given z, y tells the auxiliary
density little that z does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from susl_cli.models.adgm import ADGMSettings, AuxiliaryModel
from susl_cli.models.gmdgm import GMDGM


@dataclass(frozen=True)
class AGMDGMSettings(ADGMSettings):
    """AGM-DGM's settings: those of ADGM (aux_dim besides the shared ones)."""


class AGMDGM(AuxiliaryModel, GMDGM):
    """AGM-DGM: GM-DGM's p(x|z) p(z|y) p(y) with p(a|x,z), and q(a|x) q(y|a,x) q(z|a,x,y)."""

    name = "agm-dgm"
    title = "AGM-DGM"  # in tables and reports (models.model_title)
    settings_class = AGMDGMSettings
    aux_uses_y = False
    description = "AGM-DGM: GM-DGM with an auxiliary variable a, mixture prior p(z|y)"
