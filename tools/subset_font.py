"""Makes assets/fonts/DejaVuSans-subset.ttf, the font sv72 embeds for plot text.

DejaVu Sans (Debian `fonts-dejavu-core`) cut to Latin-1 plus the few symbols the reports use
(– − Δ ≤ ≥ × · ₀–₉ …), which takes the file from 740 KB to about 23 KB. The licence
(assets/fonts/LICENSE-DejaVu.txt) allows modified copies under a name without "Bitstream" or
"Vera".

    pip install fonttools
    python tools/subset_font.py [/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf]
"""

import pathlib
import sys

from fontTools import subset

SRC = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
OUT = pathlib.Path(__file__).resolve().parent.parent / "assets/fonts/DejaVuSans-subset.ttf"
UNICODES = (
    "U+0020-007E,U+00A0-00FF,U+0394,U+03B1,U+03B4,U+03BC,U+2013,U+2014,U+2022,U+2026,"
    "U+2080-2089,U+2212,U+2264,U+2265"
)


def main() -> None:
    src = sys.argv[1] if len(sys.argv) > 1 else SRC
    subset.main(
        [
            src,
            f"--unicodes={UNICODES}",
            "--layout-features=kern",
            "--no-hinting",
            "--desubroutinize",
            f"--output-file={OUT}",
        ]
    )
    print(f"{OUT}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
