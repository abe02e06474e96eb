"""The QR Code encoder: published values of the standard, and a real decoder reading it back.

The independent decoder is ``zbarimg`` from Debian's ``zbar-tools`` (scripts/test installs
it); without it the decoding tests are skipped, saying why.
"""

from __future__ import annotations

import re
import shutil
import string
import struct
import subprocess
import warnings
import zlib
from pathlib import Path

import pytest

from engine import qrcode

ZBARIMG = shutil.which("zbarimg")


@pytest.fixture
def zbarimg() -> str:
    if ZBARIMG is None:
        reason = "zbarimg is not installed (Debian package zbar-tools): QR codes not decoded"
        warnings.warn(reason, stacklevel=1)
        pytest.skip(reason)
    return ZBARIMG


def decode(zbarimg: str, code: qrcode.QrCode, tmp_path: Path, *, scale: int = 3) -> bytes:
    """What a real reader finds in the PNG rendering (raw bytes, no charset guessing)."""
    image = tmp_path / "code.png"
    image.write_bytes(qrcode.to_png(code, scale=scale))
    result = subprocess.run(
        [zbarimg, "--raw", "-q", "-Sbinary", str(image)], capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


# --------------------------------------------------------------------------- known values


def test_reed_solomon_of_the_hello_world_symbol() -> None:
    """'HELLO WORLD' as 1-M: data and error correction codewords as published."""
    data = [32, 91, 11, 120, 209, 114, 220, 77, 67, 64, 236, 17, 236, 17, 236, 17]
    assert qrcode.rs_remainder(data, 10) == [196, 35, 39, 119, 235, 215, 231, 226, 93, 23]
    # The generator for 10 codewords, as exponents of alpha.
    logs = [qrcode._LOG[c] for c in qrcode.rs_generator(10)]
    assert logs == [0, 251, 67, 46, 61, 118, 70, 64, 94, 32, 45]
    # ISO/IEC 18004 annex I: "01234567" as 1-M.
    annex = [16, 32, 12, 86, 97, 128, 236, 17, 236, 17, 236, 17, 236, 17, 236, 17]
    assert qrcode.rs_remainder(annex, 10) == [165, 36, 212, 193, 237, 54, 199, 135, 44, 85]


def test_gf256_arithmetic() -> None:
    assert qrcode.gf_multiply(0, 7) == qrcode.gf_multiply(7, 0) == 0
    assert qrcode.gf_multiply(2, 128) == 0x1D  # x * x^7 = x^8 = x^4+x^3+x^2+1
    for a in range(1, 256):
        inverse = qrcode._EXP[255 - qrcode._LOG[a]]
        assert qrcode.gf_multiply(a, inverse) == 1


def test_format_information_of_level_m_for_every_mask() -> None:
    expected = [
        "101010000010010",
        "101000100100101",
        "101111001111100",
        "101101101001011",
        "100010111111001",
        "100000011001110",
        "100111110010111",
        "100101010100000",
    ]
    assert [format(qrcode.format_bits(mask), "015b") for mask in range(8)] == expected


def test_version_information() -> None:
    assert qrcode.version_bits(7) == 0x07C94
    assert qrcode.version_bits(21) == 0x15683
    assert qrcode.version_bits(40) == 0x28C69


def test_capacities_and_layout_of_level_m() -> None:
    assert [qrcode.byte_capacity(v) for v in (1, 2, 5, 10, 20, 40)] == [14, 26, 84, 213, 666, 2331]
    assert [qrcode.raw_codewords(v) for v in (1, 7, 10, 40)] == [26, 196, 346, 3706]
    assert qrcode.alignment_positions(1) == []
    assert qrcode.alignment_positions(2) == [6, 18]
    assert qrcode.alignment_positions(7) == [6, 22, 38]
    assert qrcode.alignment_positions(32) == [6, 34, 60, 86, 112, 138]
    assert qrcode.alignment_positions(40) == [6, 30, 58, 86, 114, 142, 170]


def test_data_codewords_of_byte_mode() -> None:
    words = qrcode.data_codewords(b"hi", 1)
    # 0100 mode, 00000010 count, 'h' 'i', 0000 terminator, then the pad bytes.
    assert words[:4] == [0b01000000, 0b00100110, 0b10000110, 0b10010000]
    assert words[4:] == [0xEC, 0x11] * 6
    assert len(qrcode.data_codewords(b"x" * 300, 13)) == qrcode.data_capacity(13)


def test_the_symbol_has_its_function_patterns() -> None:
    code = qrcode.encode("function patterns", mask=3)
    m, size = code.modules, code.size
    assert code.version == 2 and size == 25
    finder = [
        [True] * 7,
        [True, False, False, False, False, False, True],
        [True, False, True, True, True, False, True],
        [True, False, True, True, True, False, True],
        [True, False, True, True, True, False, True],
        [True, False, False, False, False, False, True],
        [True] * 7,
    ]
    for top, left in ((0, 0), (0, size - 7), (size - 7, 0)):
        assert [list(row[left : left + 7]) for row in m[top : top + 7]] == finder
    assert [m[6][c] for c in range(8, size - 8)] == [c % 2 == 0 for c in range(8, size - 8)]
    assert [m[r][6] for r in range(8, size - 8)] == [r % 2 == 0 for r in range(8, size - 8)]
    assert m[size - 8][8]  # the dark module
    # Both copies of the format information say level M, mask 3.
    bits = qrcode.format_bits(3)
    first = [m[r][8] for r in (0, 1, 2, 3, 4, 5, 7, 8)] + [m[8][c] for c in (7, 5, 4, 3, 2, 1, 0)]
    second = [m[8][size - 1 - i] for i in range(8)] + [m[size - 7 + i][8] for i in range(7)]
    expected = [(bits >> i) & 1 == 1 for i in range(15)]
    assert first == second == expected


def test_the_lowest_penalty_mask_is_chosen() -> None:
    data = "https://emm.example.com/enrol"
    chosen = qrcode.encode(data)
    scores = {mask: qrcode.penalty(qrcode.encode(data, mask=mask).modules) for mask in range(8)}
    assert scores[chosen.mask] == min(scores.values())
    assert chosen.modules == qrcode.encode(data, mask=chosen.mask).modules


def test_penalty_rules() -> None:
    light = [[False] * 5 for _ in range(5)]
    # Rule 1: ten runs of five (3 each); rule 2: sixteen 2x2 blocks (3 each); rule 4: 100 %
    # light, ten 5 % steps away from half (10 each); rule 3: no dark module, no finder-like.
    assert qrcode.penalty(light) == 10 * 3 + 16 * 3 + 10 * 10
    finder_like = [[c in (0, 2, 3, 4, 6) for c in range(7)]]
    # One row: a finder-like run with light (the quiet zone) on both sides counts twice.
    assert qrcode.penalty(finder_like * 7) >= 2 * 40


def test_too_much_data_is_refused() -> None:
    with pytest.raises(qrcode.DataTooLong):
        qrcode.encode(b"x" * 2332)
    assert qrcode.encode(b"x" * 2331).version == 40
    with pytest.raises(ValueError):
        qrcode.encode("x", mask=8)


# --------------------------------------------------------------------------- renderers


def test_svg_is_one_path_of_exactly_the_dark_modules() -> None:
    code = qrcode.encode("emm://enrol?server=https%3A%2F%2Femm.example.com&code=ABCD-EFGH-JKLM")
    svg = qrcode.to_svg(code)
    side = code.size + 2 * qrcode.QUIET_ZONE
    assert svg.startswith("<?xml") and f'viewBox="0 0 {side} {side}"' in svg
    assert svg.count("<path") == 1
    (path,) = re.findall(r'<path d="([^"]*)"', svg)
    dark = set()
    for x, y, width in re.findall(r"M(\d+),(\d+)h(\d+)v1h-\3z", path):
        for column in range(int(x), int(x) + int(width)):
            dark.add((int(y) - qrcode.QUIET_ZONE, column - qrcode.QUIET_ZONE))
    assert len(re.findall(r"M", path)) == len(re.findall(r"M(\d+),(\d+)h(\d+)v1h-\3z", path))
    expected = {(r, c) for r, row in enumerate(code.modules) for c, on in enumerate(row) if on}
    assert dark == expected


def test_png_is_one_bit_grayscale_with_a_quiet_zone() -> None:
    code = qrcode.encode("png")
    png = qrcode.to_png(code, scale=2)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", png[8:16])
    width, height, depth, colour = struct.unpack(">IIBB", png[16:26])
    side = (code.size + 8) * 2
    assert (kind, length, width, height, depth, colour) == (b"IHDR", 13, side, side, 1, 0)
    idat = png.index(b"IDAT")
    size = struct.unpack(">I", png[idat - 4 : idat])[0]
    raw = zlib.decompress(png[idat + 4 : idat + 4 + size])
    stride = 1 + (side + 7) // 8
    rows = [raw[i : i + stride] for i in range(0, len(raw), stride)]
    assert len(rows) == side and all(row[0] == 0 for row in rows)
    tail = bytes([0xFF << (8 - side % 8) & 0xFF]) if side % 8 else b""
    assert rows[0][1:] == bytes([0xFF] * (side // 8)) + tail  # the quiet zone: all white
    # The top-left finder starts after 4 light modules (8 pixels): first row of the symbol.
    first = rows[8]
    assert first[1] == 0xFF and first[2] == 0x00  # pixels 8..15 dark
    assert png.endswith(b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


# --------------------------------------------------------------------------- a real decoder

URL = "https://emm.example.com/enrol?organisation=acme&code=ABCD-EFGH-JKLM&next=/devices/"
PRINTABLE = string.printable.replace("\n", "").replace("\r", "").replace("\x0b", "")


@pytest.mark.parametrize("length", [1, 17, 60, 150, 200])
@pytest.mark.parametrize("source", ["url", "printable"])
def test_zbar_reads_back_what_was_encoded(
    zbarimg: str, tmp_path: Path, length: int, source: str
) -> None:
    alphabet = URL if source == "url" else PRINTABLE
    text = (alphabet * (length // len(alphabet) + 1))[:length]
    code = qrcode.encode(text)
    assert code.version <= 10
    assert decode(zbarimg, code, tmp_path).decode() == text


def test_zbar_reads_every_byte_value(zbarimg: str, tmp_path: Path) -> None:
    data = bytes(range(256))
    assert decode(zbarimg, qrcode.encode(data), tmp_path) == data


@pytest.mark.parametrize("mask", range(8))
def test_zbar_reads_every_mask(zbarimg: str, tmp_path: Path, mask: int) -> None:
    text = f"mask {mask}: emm://enrol?code=ABCD-EFGH-JKLM"
    assert decode(zbarimg, qrcode.encode(text, mask=mask), tmp_path).decode() == text


@pytest.mark.parametrize("length", [14, 15, 213, 214, 600, 2331])
def test_zbar_reads_versions_up_to_40(zbarimg: str, tmp_path: Path, length: int) -> None:
    """Lengths at the edges of versions 1/2 and 10/11, and the largest symbol."""
    data = bytes((i * 7 + 32) % 95 + 32 for i in range(length))
    code = qrcode.encode(data)
    assert decode(zbarimg, code, tmp_path, scale=2) == data
