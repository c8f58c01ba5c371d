"""What the LIMS stores about one reconstructed tomography volume (a Tomogram row)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TomogramRecord:
    """One reconstructed volume.

    Sizes in voxels: x and y across a slice, z the number of slices (detector rows).
    `centre_of_rotation` is the detector column of the rotation axis (pixels) and
    `centre_method` how it was chosen. Image paths are the PNG previews: the central
    xy slice and the xz and yz planes through the volume's centre.
    """

    volume_file: str
    size_x: int
    size_y: int
    size_z: int
    centre_of_rotation: float
    centre_method: str
    pixel_spacing_angstrom: float | None = None
    central_slice_image: str | None = None
    xz_image: str | None = None
    yz_image: str | None = None
