#!/usr/bin/env python3
"""Reference-compatible entry point: `python test.py [reference flags]` = `audiotext test ...`.

The run is found as OUTPUT_DIR/NAME (or --run_dir); the model flags are read from its config.json.
"""
import sys

from audiotext.cli import main

if __name__ == "__main__":
    main(["test", *sys.argv[1:]])
