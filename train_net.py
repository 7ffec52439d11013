"""The authors' entry point, kept for their command lines: `python train_net.py --config-file ... [opts]`
is `textreid train --config-file ... [opts]`."""

import sys

from textreid.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
