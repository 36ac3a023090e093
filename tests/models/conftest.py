"""Make the shared helpers in tiny_models.py importable by the model tests (pytest runs in importlib mode)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
