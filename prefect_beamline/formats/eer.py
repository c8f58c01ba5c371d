"""EER movies (Thermo Fisher Falcon 4/4i): reading dose fractions, and writing test files.

An EER file is a TIFF with one page per (very short) frame; each page's strips hold the
frame's bitstream (compression 65000: 8-bit runs, the first files; 65001: 7-bit runs;
65002: run and sub-pixel widths in the private tags 65007-65009). Processing sums
`frames_per_group` consecutive frames into one dose fraction, rendered at 4K (the
sensor's pixels) or 8K (one bit of sub-pixel position), as RELION's `--eer_grouping`
and `--eer_upsampling` do. The bytes are read straight from the file (memory-mapped);
the kernel renders them (`prefect_beamline.ext.eer`).

`encode_eer_frame` / `write_eer_movie` write such files from electron positions, for
tests and demos: the layout RELION and tifffile read.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import tifffile

from prefect_beamline.ext.eer import EERCode, EERDecodeError, eer_render
from prefect_beamline.formats.errors import DataFileError

EER_SUFFIXES = (".eer",)
COMPRESSION_8BIT = 65000
COMPRESSION_7BIT = 65001
COMPRESSION_TAGGED = 65002
TAG_RLE_BITS, TAG_HORZ_BITS, TAG_VERT_BITS = 65007, 65008, 65009
# Sub-pixel symbols are stored with the top bit of each axis inverted.
_CODES = {
    COMPRESSION_8BIT: EERCode(rle_bits=8, sub_bits=2, symbol_after_skip=True),
    COMPRESSION_7BIT: EERCode(rle_bits=7, sub_bits=2),
}


class EERMovie:
    """An EER file opened for reading dose fractions (groups of frames), one at a time.

    `n_frames` counts the file's EER frames, `n_groups` the fractions of
    `frames_per_group` frames (a last partial group is dropped, as RELION does);
    `shape` is the rendered fraction's (ny, nx).
    """

    def __init__(self, path: Path, frames_per_group: int, upsampling: int) -> None:
        self.path = path
        if frames_per_group < 1:
            raise DataFileError(f"{path}: frames_per_group must be at least 1")
        try:
            with tifffile.TiffFile(path) as tiff:
                pages = [page for page in tiff.pages if isinstance(page, tifffile.TiffPage)]
                self._segments = [
                    list(zip(page.dataoffsets, page.databytecounts, strict=True)) for page in pages
                ]
                first = pages[0]
                self.sensor_shape = (int(first.imagelength), int(first.imagewidth))
                self.code = self._code(first)
                sensor_pixel = _sensor_pixel_angstrom(first)
        except (tifffile.TiffFileError, OSError, IndexError, ValueError) as error:
            raise DataFileError(f"{path}: not a readable EER movie: {error}") from error
        self.n_frames = len(self._segments)
        self.frames_per_group = frames_per_group
        self.upsampling = upsampling
        self.n_groups = self.n_frames // frames_per_group
        if self.n_groups == 0:
            raise DataFileError(
                f"{path}: {self.n_frames} EER frames, fewer than one group of {frames_per_group}"
            )
        self.shape = (self.sensor_shape[0] * upsampling, self.sensor_shape[1] * upsampling)
        # The rendered pixel: the sensor's (from EPU's metadata) over the upsampling.
        self.pixel_size_angstrom = None if sensor_pixel is None else sensor_pixel / upsampling
        self._bytes: np.ndarray = np.memmap(path, dtype=np.uint8, mode="r")
        end = max(offset + count for segments in self._segments for offset, count in segments)
        if end > self._bytes.size:
            raise DataFileError(
                f"{path}: truncated EER movie: frames reach byte {end}, file has {self._bytes.size}"
            )

    def _code(self, page: tifffile.TiffPage) -> EERCode:
        compression = int(page.compression)
        if compression in _CODES:
            return _CODES[compression]
        if compression == COMPRESSION_TAGGED:
            tags = page.tags
            missing = [t for t in (TAG_RLE_BITS, TAG_HORZ_BITS, TAG_VERT_BITS) if t not in tags]
            if missing:
                raise DataFileError(f"{self.path}: EER compression 65002 without tags {missing}")
            horizontal, vertical = int(tags[TAG_HORZ_BITS].value), int(tags[TAG_VERT_BITS].value)
            if horizontal != vertical:
                raise DataFileError(
                    f"{self.path}: EER sub-pixel bits {horizontal} x {vertical}, expected equal"
                )
            return EERCode(rle_bits=int(tags[TAG_RLE_BITS].value), sub_bits=horizontal)
        raise DataFileError(
            f"{self.path}: TIFF compression {compression} is not EER (65000, 65001 or 65002)"
        )

    def bitstream(self, frame: int) -> np.ndarray:
        """EER frame `frame`'s bytes (its strips, concatenated)."""
        parts = [self._bytes[offset : offset + count] for offset, count in self._segments[frame]]
        return np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts))

    def group(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """Dose fraction `index` (0-based): its frames' electrons, uint16 of `shape`."""
        if not 0 <= index < self.n_groups:
            raise IndexError(f"{self.path}: group {index} outside 0..{self.n_groups - 1}")
        out = np.zeros(self.shape, dtype=np.uint16) if out is None else out
        out.fill(0)
        first = index * self.frames_per_group
        for frame in range(first, first + self.frames_per_group):
            try:
                eer_render(
                    self.bitstream(frame), self.sensor_shape, self.code, out, self.upsampling
                )
            except EERDecodeError as error:
                raise DataFileError(f"{self.path}: EER frame {frame}: {error}") from error
        return out

    def close(self) -> None:
        """Release the file's mapping."""
        mapping = getattr(self._bytes, "_mmap", None)
        self._bytes = np.zeros(0, dtype=np.uint8)
        if mapping is not None:
            mapping.close()


def _sensor_pixel_angstrom(page: tifffile.TiffPage) -> float | None:
    """sensorPixelSize.width (m) of the acquisition metadata in tag 65001, in Å."""
    tag = page.tags.get(65001)
    if tag is None or not isinstance(tag.value, bytes):
        return None
    try:
        root = ElementTree.fromstring(tag.value.rstrip(b"\x00"))
    except ElementTree.ParseError:
        return None
    for item in root.iter("item"):
        if item.get("name") == "sensorPixelSize.width" and item.text:
            try:
                size = float(item.text) * 1e10
            except ValueError:
                return None
            return size if size > 0 else None
    return None


class _BitWriter:
    """Bits appended least significant first, as EER bitstreams are read."""

    def __init__(self, code: EERCode) -> None:
        self.code = code
        self.value = 0
        self.n_bits = 0

    def write(self, value: int, n_bits: int) -> None:
        self.value |= value << self.n_bits
        self.n_bits += n_bits

    def run(self, pixels: int) -> None:
        """A run of `pixels` without an electron: runs of the largest value (no electron;
        65000 spends a symbol after each), then the rest."""
        skip = (1 << self.code.rle_bits) - 1
        while pixels >= skip:
            self.write(skip, self.code.rle_bits)
            if self.code.symbol_after_skip:
                self.write(0, 2 * self.code.sub_bits)
            pixels -= skip
        self.write(pixels, self.code.rle_bits)

    def to_bytes(self) -> bytes:
        """Whole 64-bit words, as the camera writes them, and one more to read ahead."""
        return self.value.to_bytes(8 * ((self.n_bits + 63) // 64 + 1), "little")


def encode_eer_frame(
    positions: np.ndarray, sub_x: np.ndarray, sub_y: np.ndarray, n_pixels: int, code: EERCode
) -> bytes:
    """One frame's bitstream: electrons at sorted, distinct pixel indices `positions`
    (row * width + column) with sub-pixel positions `sub_x`, `sub_y` (0..2^sub_bits-1)."""
    writer = _BitWriter(code)
    flip = 1 << (code.sub_bits - 1)
    position = 0
    for pixel, x, y in zip(positions.tolist(), sub_x.tolist(), sub_y.tolist(), strict=True):
        if pixel < position:
            raise ValueError("positions must be sorted and distinct")
        writer.run(pixel - position)
        writer.write((x ^ flip) | ((y ^ flip) << code.sub_bits), 2 * code.sub_bits)
        position = pixel + 1
    writer.run(n_pixels - position)
    return writer.to_bytes()


def acquisition_metadata(pixel_size_angstrom: float, n_frames: int) -> bytes:
    """The XML EPU stores in tag 65001 of an EER file's pages (the fields we use)."""
    return (
        "<metadata>"
        f'<item name="numberOfFrames">{n_frames}</item>'
        f'<item name="sensorPixelSize.height" unit="m">{pixel_size_angstrom * 1e-10:.6e}</item>'
        f'<item name="sensorPixelSize.width" unit="m">{pixel_size_angstrom * 1e-10:.6e}</item>'
        "</metadata>"
    ).encode()


def write_eer_movie(
    path: str | Path,
    frames: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    sensor_shape: tuple[int, int],
    compression: int = COMPRESSION_7BIT,
    pixel_size_angstrom: float = 0.8,
) -> Path:
    """An EER file of `frames`, each (positions, sub_x, sub_y) as `encode_eer_frame`
    takes them, laid out as EPU writes them: a little-endian BigTIFF, one page per
    frame whose one strip is the frame's bitstream, the acquisition metadata XML in tag
    65001. Written here: tifffile writes no EER compression."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    code = _CODES[compression]
    height, width = sensor_shape
    metadata = acquisition_metadata(pixel_size_angstrom, len(frames))
    short, undefined, long8 = 3, 7, 16  # TIFF field types
    with open(path, "wb") as handle:
        # BigTIFF header: byte order, version 43, 8-byte offsets; first IFD patched below.
        handle.write(b"II" + struct.pack("<HHHQ", 43, 8, 0, 0))
        previous_link = 8  # where the offset of the next IFD goes
        for positions, sub_x, sub_y in frames:
            encoded = encode_eer_frame(positions, sub_x, sub_y, height * width, code)
            strip = handle.tell()
            handle.write(encoded)
            xml = handle.tell()
            handle.write(metadata)
            handle.write(b"\x00" * (-handle.tell() % 8))  # IFDs start on a word boundary
            entries = [
                (256, long8, 1, width),  # ImageWidth
                (257, long8, 1, height),  # ImageLength
                (258, short, 1, 8),  # BitsPerSample
                (259, short, 1, compression),  # Compression
                (262, short, 1, 1),  # PhotometricInterpretation: black is zero
                (273, long8, 1, strip),  # StripOffsets
                (277, short, 1, 1),  # SamplesPerPixel
                (278, long8, 1, height),  # RowsPerStrip
                (279, long8, 1, len(encoded)),  # StripByteCounts
                (65001, undefined, len(metadata), xml),  # EER acquisition metadata
            ]
            ifd = handle.tell()
            handle.write(struct.pack("<Q", len(entries)))
            for tag, kind, count, value in entries:
                field = struct.pack("<H6x", value) if kind == short else struct.pack("<Q", value)
                handle.write(struct.pack("<HHQ", tag, kind, count) + field)
            link = handle.tell()
            handle.write(struct.pack("<Q", 0))
            handle.seek(previous_link)
            handle.write(struct.pack("<Q", ifd))
            handle.seek(0, 2)
            previous_link = link
    return path
