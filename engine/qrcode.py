"""QR Code symbols (ISO/IEC 18004): byte mode, error correction level M, versions 1 to 40.

Installation codes are shown as QR codes that the client app scans, so the service draws
them itself rather than depending on a library for one small, stable algorithm. Level M
restores up to about 15 % of damaged codewords, which is what a phone camera reading a
screen or a printed letter needs; byte mode carries any text (the enrolment URI is ASCII).

The steps follow the standard in order, each a small function: data codewords
(:func:`data_codewords`), Reed-Solomon error correction over GF(256) (:func:`rs_remainder`),
interleaving of the blocks, placement in the matrix next to the function patterns, the
eight data masks scored with the four penalty rules, and the format and version
information (BCH codes). Renderers give one SVG ``path`` or a 1-bit PNG, both with the
quiet zone of four modules that readers need.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby, pairwise

MIN_VERSION, MAX_VERSION = 1, 40
#: Quiet zone around the symbol, in modules (the standard asks for at least four).
QUIET_ZONE = 4

# Level M, versions 1..40 (ISO/IEC 18004 table 9): error correction codewords per block and
# number of blocks. How many data codewords each block gets follows from the version's
# capacity, so the table need not list the two block sizes.
_EC_PER_BLOCK = (
    10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26,
    26, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28,
)  # fmt: skip
_BLOCKS = (
    1, 1, 1, 2, 2, 4, 4, 4, 5, 5, 5, 8, 9, 9, 10, 10, 11, 13, 14, 16,
    17, 17, 18, 20, 21, 23, 25, 26, 28, 29, 31, 33, 35, 37, 38, 40, 43, 45, 47, 49,
)  # fmt: skip

#: Two bits naming the error correction level in the format information (M is 00).
_LEVEL_M_BITS = 0b00
_FORMAT_GENERATOR = 0b10100110111  # x^10 + x^8 + x^5 + x^4 + x^2 + x + 1
_FORMAT_XOR = 0b101010000010010  # keeps the format information from being all light
_VERSION_GENERATOR = 0b1111100100101  # x^12 + x^11 + x^10 + x^9 + x^8 + x^5 + x^2 + 1
_BYTE_MODE = 0b0100
_PAD = (0xEC, 0x11)

# Penalty weights N1..N4 of the mask evaluation.
_N1, _N2, _N3, _N4 = 3, 3, 40, 10
#: Dark-light-dark-dark-dark-light-dark with four light modules on one side (rule 3).
_FINDER_LIKE = ("10111010000", "00001011101")


class DataTooLong(ValueError):
    """The data does not fit the largest version allowed."""


# --------------------------------------------------------------------------- GF(256)

_EXP = [0] * 512
_LOG = [0] * 256


def _build_field() -> None:
    """Exponent and logarithm tables of GF(2^8) with the polynomial x^8+x^4+x^3+x^2+1."""
    value = 1
    for power in range(255):
        _EXP[power] = value
        _LOG[value] = power
        value <<= 1
        if value & 0x100:
            value ^= 0x11D
    for power in range(255, 512):  # doubled, so products need no modulo
        _EXP[power] = _EXP[power - 255]


_build_field()


def gf_multiply(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def rs_generator(degree: int) -> list[int]:
    """Coefficients (highest power first) of (x - a^0)(x - a^1)…(x - a^(degree-1)).

    ``a`` is alpha, the field's primitive element 2.
    """
    poly = [1]
    for power in range(degree):
        factor = _EXP[power]
        # Multiply by (x + a^power): shift for x, add the scaled copy.
        poly = [a ^ gf_multiply(b, factor) for a, b in zip([*poly, 0], [0, *poly], strict=True)]
    return poly


def rs_remainder(data: Sequence[int], degree: int) -> list[int]:
    """The ``degree`` error correction codewords of ``data`` (polynomial division)."""
    generator = rs_generator(degree)[1:]
    remainder = [0] * degree
    for codeword in data:
        factor = codeword ^ remainder[0]
        remainder = [*remainder[1:], 0]
        if factor:
            for index, coefficient in enumerate(generator):
                remainder[index] ^= gf_multiply(coefficient, factor)
    return remainder


# --------------------------------------------------------------------------- capacity


def _size(version: int) -> int:
    return 17 + 4 * version


def raw_codewords(version: int) -> int:
    """Codewords a version holds: its modules less the function patterns, in bytes."""
    modules = (16 * version + 128) * version + 64
    if version >= 2:
        alignments = version // 7 + 2
        modules -= (25 * alignments - 10) * alignments - 55
        if version >= 7:
            modules -= 36  # two version information blocks
    return modules // 8


def data_capacity(version: int) -> int:
    """Data codewords of ``version`` at level M."""
    return raw_codewords(version) - _EC_PER_BLOCK[version - 1] * _BLOCKS[version - 1]


def _count_bits(version: int) -> int:
    return 8 if version <= 9 else 16


def byte_capacity(version: int) -> int:
    """How many bytes of data ``version`` holds in byte mode at level M."""
    return (data_capacity(version) * 8 - 4 - _count_bits(version)) // 8


def alignment_positions(version: int) -> list[int]:
    """Row and column centres of the alignment patterns (evenly spaced from the far side)."""
    if version == 1:
        return []
    count = version // 7 + 2
    step = (version * 8 + count * 3 + 5) // (count * 4 - 4) * 2
    size = _size(version)
    return [6, *reversed([size - 7 - i * step for i in range(count - 1)])]


# --------------------------------------------------------------------------- codewords


def data_codewords(data: bytes, version: int) -> list[int]:
    """Mode, count, data, terminator and padding, as the version's data codewords."""
    capacity = data_capacity(version)
    bits: list[int] = []

    def put(value: int, length: int) -> None:
        bits.extend((value >> shift) & 1 for shift in range(length - 1, -1, -1))

    put(_BYTE_MODE, 4)
    put(len(data), _count_bits(version))
    for byte in data:
        put(byte, 8)
    if len(bits) > capacity * 8:
        raise DataTooLong(f"{len(data)} bytes do not fit version {version}")
    put(0, min(4, capacity * 8 - len(bits)))  # terminator, shortened when full
    put(0, -len(bits) % 8)
    codewords = [
        int("".join(map(str, bits[start : start + 8])), 2) for start in range(0, len(bits), 8)
    ]
    for index in range(capacity - len(codewords)):
        codewords.append(_PAD[index % 2])
    return codewords


def final_codewords(data: Sequence[int], version: int) -> list[int]:
    """Data split into blocks, each with its error correction, interleaved.

    The short blocks come first; the long ones hold one more data codeword.
    """
    blocks = _BLOCKS[version - 1]
    degree = _EC_PER_BLOCK[version - 1]
    short = len(data) // blocks
    long_count = len(data) % blocks
    data_blocks: list[Sequence[int]] = []
    start = 0
    for index in range(blocks):
        length = short + (1 if index >= blocks - long_count else 0)
        data_blocks.append(data[start : start + length])
        start += length
    ec_blocks = [rs_remainder(block, degree) for block in data_blocks]
    result = [
        block[column] for column in range(short + 1) for block in data_blocks if column < len(block)
    ]
    result += [block[column] for column in range(degree) for block in ec_blocks]
    return result


# --------------------------------------------------------------------------- BCH codes


def _bch(value: int, generator: int) -> int:
    """``value`` followed by its BCH remainder for ``generator``."""
    degree = generator.bit_length() - 1
    remainder = value << degree
    while remainder.bit_length() > degree:
        remainder ^= generator << (remainder.bit_length() - generator.bit_length())
    return value << degree | remainder


def format_bits(mask: int) -> int:
    """The 15 format information bits for level M and ``mask``."""
    return _bch(_LEVEL_M_BITS << 3 | mask, _FORMAT_GENERATOR) ^ _FORMAT_XOR


def version_bits(version: int) -> int:
    """The 18 version information bits (versions 7 and up)."""
    return _bch(version, _VERSION_GENERATOR)


# --------------------------------------------------------------------------- the matrix

_MASKS: tuple[Callable[[int, int], bool], ...] = (
    lambda r, c: (r + c) % 2 == 0,
    lambda r, c: r % 2 == 0,
    lambda r, c: c % 3 == 0,
    lambda r, c: (r + c) % 3 == 0,
    lambda r, c: (r // 2 + c // 3) % 2 == 0,
    lambda r, c: (r * c) % 2 + (r * c) % 3 == 0,
    lambda r, c: ((r * c) % 2 + (r * c) % 3) % 2 == 0,
    lambda r, c: ((r + c) % 2 + (r * c) % 3) % 2 == 0,
)


class _Matrix:
    """Modules being drawn, and which of them belong to function patterns."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.size = _size(version)
        self.dark = [[False] * self.size for _ in range(self.size)]
        self.function = [[False] * self.size for _ in range(self.size)]

    def put(self, row: int, column: int, dark: bool) -> None:
        self.dark[row][column] = dark
        self.function[row][column] = True

    def draw_function_patterns(self) -> None:
        size = self.size
        for index in range(size):  # timing patterns
            self.put(6, index, index % 2 == 0)
            self.put(index, 6, index % 2 == 0)
        for row, column in ((3, 3), (3, size - 4), (size - 4, 3)):
            self._finder(row, column)
        centres = alignment_positions(self.version)
        last = len(centres) - 1
        for i, row in enumerate(centres):
            for j, column in enumerate(centres):
                # Not where the finder patterns are (the three corners).
                if (i, j) not in ((0, 0), (0, last), (last, 0)):
                    self._alignment(row, column)
        self.draw_format(0)  # reserves the area; redrawn once the mask is chosen
        self._draw_version()

    def _finder(self, row: int, column: int) -> None:
        """A finder pattern centred here, with its light separator."""
        for dr in range(-4, 5):
            for dc in range(-4, 5):
                r, c = row + dr, column + dc
                if 0 <= r < self.size and 0 <= c < self.size:
                    ring = max(abs(dr), abs(dc))
                    self.put(r, c, ring not in (2, 4))

    def _alignment(self, row: int, column: int) -> None:
        for dr in range(-2, 3):
            for dc in range(-2, 3):
                self.put(row + dr, column + dc, max(abs(dr), abs(dc)) != 1)

    def draw_format(self, mask: int) -> None:
        """Both copies of the format information, bit 0 being the least significant."""
        bits = format_bits(mask)
        size = self.size

        def bit(index: int) -> bool:
            return (bits >> index) & 1 == 1

        # Around the top-left finder: down column 8, then left along row 8.
        for index in range(6):
            self.put(index, 8, bit(index))
        self.put(7, 8, bit(6))
        self.put(8, 8, bit(7))
        self.put(8, 7, bit(8))
        for index in range(9, 15):
            self.put(8, 14 - index, bit(index))
        # Split between the other two finders.
        for index in range(8):
            self.put(8, size - 1 - index, bit(index))
        for index in range(8, 15):
            self.put(size - 15 + index, 8, bit(index))
        self.put(size - 8, 8, True)  # the dark module, always dark

    def _draw_version(self) -> None:
        if self.version < 7:
            return
        bits = version_bits(self.version)
        for index in range(18):
            dark = (bits >> index) & 1 == 1
            near, far = index // 3, self.size - 11 + index % 3
            self.put(far, near, dark)  # bottom-left block
            self.put(near, far, dark)  # top-right block

    def place(self, codewords: Sequence[int]) -> None:
        """Codeword bits in two-module columns, zigzagging up and down from the bottom right."""
        size = self.size
        bits = [(codeword >> shift) & 1 for codeword in codewords for shift in range(7, -1, -1)]
        index = 0
        right = size - 1
        while right >= 1:
            if right == 6:
                right = 5  # the vertical timing pattern takes a whole column
            upward = (right + 1) & 2 == 0
            for step in range(size):
                row = size - 1 - step if upward else step
                for column in (right, right - 1):
                    if not self.function[row][column] and index < len(bits):
                        self.dark[row][column] = bits[index] == 1
                        index += 1
            right -= 2
        # Remainder bits (0 to 7 of them) stay light.

    def masked(self, mask: int) -> list[list[bool]]:
        rule = _MASKS[mask]
        return [
            [
                dark != (not function and rule(r, c))
                for c, (dark, function) in enumerate(zip(dark_row, function_row, strict=True))
            ]
            for r, (dark_row, function_row) in enumerate(zip(self.dark, self.function, strict=True))
        ]


def penalty(modules: Sequence[Sequence[bool]]) -> int:
    """The four penalty rules of the mask evaluation; the lowest score wins."""
    rows = ["".join("1" if dark else "0" for dark in row) for row in modules]
    columns = ["".join(column) for column in zip(*rows, strict=True)]
    score = 0
    for line in (*rows, *columns):
        # Rule 1: runs of five or more modules of one colour.
        for _, run in groupby(line):
            length = sum(1 for _ in run)
            if length >= 5:
                score += _N1 + length - 5
        # Rule 3: finder-like patterns; the quiet zone counts as light.
        padded = f"0000{line}0000"
        score += _N3 * sum(padded.count(pattern) for pattern in _FINDER_LIKE)
    # Rule 2: 2x2 blocks of one colour.
    for upper, lower in pairwise(rows):
        for c in range(len(upper) - 1):
            if upper[c] == upper[c + 1] == lower[c] == lower[c + 1]:
                score += _N2
    # Rule 4: every 5 % by which dark modules stray from half.
    total = len(rows) ** 2
    dark = sum(row.count("1") for row in rows)
    score += _N4 * (abs(dark * 20 - total * 10) // total)
    return score


# --------------------------------------------------------------------------- the symbol


@dataclass(frozen=True)
class QrCode:
    """A finished symbol: ``modules[row][column]`` is True for dark."""

    version: int
    mask: int
    modules: tuple[tuple[bool, ...], ...]

    @property
    def size(self) -> int:
        return len(self.modules)


def smallest_version(length: int, *, min_version: int = MIN_VERSION) -> int:
    for version in range(min_version, MAX_VERSION + 1):
        if length <= byte_capacity(version):
            return version
    raise DataTooLong(f"{length} bytes exceed a QR code's {byte_capacity(MAX_VERSION)} bytes")


def encode(data: bytes | str, *, min_version: int = MIN_VERSION, mask: int | None = None) -> QrCode:
    """Encode ``data`` (text as UTF-8) in the smallest version that holds it.

    ``mask`` forces a data mask (tests); otherwise the one with the lowest penalty is used.
    """
    payload = data.encode() if isinstance(data, str) else bytes(data)
    if not MIN_VERSION <= min_version <= MAX_VERSION:
        raise ValueError(f"versions run from {MIN_VERSION} to {MAX_VERSION}")
    if mask is not None and not 0 <= mask <= 7:
        raise ValueError("masks are 0 to 7")
    version = smallest_version(len(payload), min_version=min_version)
    matrix = _Matrix(version)
    matrix.draw_function_patterns()
    matrix.place(final_codewords(data_codewords(payload, version), version))
    candidates = range(8) if mask is None else (mask,)
    best: tuple[int, int, list[list[bool]]] | None = None
    for candidate in candidates:
        matrix.draw_format(candidate)
        modules = matrix.masked(candidate)
        score = penalty(modules) if mask is None else 0
        if best is None or score < best[0]:
            best = (score, candidate, modules)
    assert best is not None
    _, chosen, modules = best
    return QrCode(version, chosen, tuple(tuple(row) for row in modules))


# --------------------------------------------------------------------------- renderers


def to_svg(code: QrCode, *, scale: int = 8, border: int = QUIET_ZONE) -> str:
    """An SVG image: a white square and one path of the dark modules, one unit per module.

    Horizontal runs of dark modules become one rectangle each, which keeps the path short.
    ``scale`` sets the default display size (pixels per module); the image scales freely.
    """
    side = code.size + 2 * border
    parts = []
    for r, row in enumerate(code.modules):
        c = 0
        for dark, run in groupby(row):
            length = sum(1 for _ in run)
            if dark:
                parts.append(f"M{c + border},{r + border}h{length}v1h-{length}z")
            c += length
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" viewBox="0 0 {side} {side}"'
        f' width="{side * scale}" height="{side * scale}" shape-rendering="crispEdges">'
        f'<rect width="{side}" height="{side}" fill="#fff"/>'
        f'<path d="{"".join(parts)}" fill="#000"/></svg>\n'
    )


def to_png(code: QrCode, *, scale: int = 8, border: int = QUIET_ZONE) -> bytes:
    """A 1-bit grayscale PNG; each module is ``scale`` by ``scale`` pixels (0 is black)."""
    if scale < 1:
        raise ValueError("scale must be at least 1")
    side = (code.size + 2 * border) * scale
    light_row = [True] * (code.size + 2 * border)
    raw = bytearray()
    for row in (
        [light_row] * border
        + [
            [True] * border + [not dark for dark in modules] + [True] * border
            for modules in code.modules
        ]
        + [light_row] * border
    ):
        pixels = [light for light in row for _ in range(scale)]
        packed = _pack_bits(pixels)
        for _ in range(scale):
            raw.append(0)  # filter: none
            raw += packed
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + _chunk(b"IEND", b"")
    )


def _pack_bits(bits: Sequence[bool]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for index, bit in enumerate(bits):
        if bit:
            out[index >> 3] |= 0x80 >> (index & 7)
    return bytes(out)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
