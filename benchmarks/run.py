"""One entry point for every benchmark: `python benchmarks/run.py NAME [--json] [--quick]`.

Each benchmark module in this folder exposes `run(quick) -> dict` and `report(dict) -> str`.
`--json` prints one JSON object and nothing else; `--quick` runs a small size (smoke test).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

BENCHMARKS = {
    "spotfind": "Cython dispersion spot finder vs numpy/scipy reference and a memory pass",
    "latency": "webhook to flow-run RUNNING through the embedded stack",
    "tomo": "Cython filtered back projection vs scikit-image iradon and a memory pass",
    "tomo_preprocess": "flat/dark minus-log and ring filter vs numpy references, memory pass",
    "backproject": "the back projector alone vs the numpy (np.interp) reference, memory pass",
    "motioncor": "gain + sub-pixel shifted frame sum vs scipy.ndimage.shift, memory pass",
    "powerspec": "radial/elliptical power-spectrum average vs numpy bincount, memory pass",
    "ptycho": "one ePIE iteration (1000 x 256² patterns): Cython vs numpy vs Pty-Chi",
    "em": "one cryo-EM movie (40 x 4096²) to micrograph + CTF, by step, vs a memory pass",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS), help="benchmark to run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="small size, for smoke tests")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    module = importlib.import_module(f"benchmarks.{args.name}")
    result = module.run(quick=args.quick)
    print(json.dumps(result) if args.json else module.report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
