#!/usr/bin/env python3
"""Reference-compatible entry point: `python train.py [reference flags]` = `audiotext train ...`."""
import sys

from audiotext.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
