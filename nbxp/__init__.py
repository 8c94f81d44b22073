"""nbxp: far-field diffraction images of nanocrystals, a drop-in replacement for nanoBragg.

>>> import nbxp, numpy
>>> cfg = nbxp.config_from_args("-cell 100 100 100 90 90 90 -default_F 100 -N 5 -detpixels 64".split())
>>> img = nbxp.simulate(cfg, xp=numpy)          # (64, 64) photons per pixel
"""

from .api import config_from_args, simulate
from .params import loss_and_grad
from .config import BeamConfig, CrystalConfig, DetectorConfig, HKLGrid, SimConfig
from .series import Frame, Series, prepare_series, simulate_series
from .structure_factors import StructureFactorSet, structure_factors

__version__ = "0.1.0"
__all__ = ["simulate", "loss_and_grad", "simulate_series", "prepare_series", "Series", "Frame", "config_from_args", "SimConfig",
           "DetectorConfig", "BeamConfig", "CrystalConfig", "HKLGrid", "structure_factors", "StructureFactorSet",
           "__version__"]
