"""A CMS-like tracker geometry: pixel and strip barrel layers (cylinders) and endcap disks, in cm.

Subdetector ids (branch `hit_subdet`): 0 pixel barrel, 1 pixel endcap, 2 strip barrel, 3 strip endcap.
Layer ids (branch `hit_layer`) number the surfaces below in order: barrel layers first, then disks at +z, -z.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUBDETECTORS = ("pixel_barrel", "pixel_endcap", "strip_barrel", "strip_endcap")
FIELD_TESLA = 3.8
OUTER_RADIUS = 110.0
OUTER_Z = 280.0


@dataclass(frozen=True)
class Barrel:
    """Cylindrical layers: radius, half length, subdetector, resolution in r-phi and z (cm)."""

    radius: np.ndarray
    half_length: np.ndarray
    subdet: np.ndarray
    sigma_rphi: np.ndarray
    sigma_z: np.ndarray


@dataclass(frozen=True)
class Endcap:
    """Disks at +-z: |z|, inner and outer radius, subdetector, resolution in r-phi and r (cm)."""

    z: np.ndarray
    r_min: np.ndarray
    r_max: np.ndarray
    subdet: np.ndarray
    sigma_rphi: np.ndarray
    sigma_r: np.ndarray


def cms_barrel() -> Barrel:
    """Pixel barrel (4 layers, Phase-1) and strip barrel (TIB 4 + TOB 6 layers)."""
    pixel = [2.9, 6.8, 10.9, 16.0]
    tib = [25.5, 33.9, 41.9, 49.8]
    tob = [60.8, 69.2, 78.0, 86.8, 96.5, 108.0]
    radius = np.array(pixel + tib + tob)
    n_pix, n_tib = len(pixel), len(tib)
    half = np.array([27.0] * n_pix + [70.0] * n_tib + [110.0] * len(tob))
    subdet = np.array([0] * n_pix + [2] * (n_tib + len(tob)))
    return Barrel(radius, half, subdet, np.where(subdet == 0, 0.0015, 0.003), np.where(subdet == 0, 0.002, 3.0))


def cms_endcap() -> Endcap:
    """Pixel endcap (3 disks), TID (3 disks) and TEC (9 disks), one set at each end."""
    fpix = [32.0, 39.5, 48.8]
    tid = [77.0, 90.0, 103.0]
    tec = [124.0, 139.0, 155.0, 171.0, 188.0, 207.0, 226.0, 248.0, 271.0]
    z = np.array(fpix + tid + tec)
    r_min = np.array([4.5] * 3 + [20.0] * 3 + [22.0] * 9)
    r_max = np.array([16.0] * 3 + [50.0] * 3 + [OUTER_RADIUS] * 9)
    subdet = np.array([1] * 3 + [3] * 12)
    return Endcap(z, r_min, r_max, subdet, np.where(subdet == 1, 0.0015, 0.003), np.where(subdet == 1, 0.002, 3.0))


def curvature_radius_cm(pt_gev: np.ndarray, field_tesla: float = FIELD_TESLA) -> np.ndarray:
    """Radius of a charged track's helix in the transverse plane: R[m] = pT[GeV] / (0.3 B[T])."""
    return 100.0 * pt_gev / (0.299792458 * field_tesla)
