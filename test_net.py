"""The authors' entry point, kept for their command lines: `python test_net.py --config-file ...
--checkpoint-file best.pth [opts]` is `textreid test --config-file ... --checkpoint-file best.pth [opts]`."""

import sys

from textreid.cli import main

if __name__ == "__main__":
    sys.exit(main(["test", *sys.argv[1:]]))
