"""Test helpers shared by several test folders (importable thanks to pytest pythonpath)."""
