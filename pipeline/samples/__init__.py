"""Small sample sources shipped with layerprobe for the README demo and tests (see README.md here)."""

from pathlib import Path

SAMPLES_DIR = Path(__file__).parent
