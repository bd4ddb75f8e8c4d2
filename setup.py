"""setuptools shim: the metadata lives in setup.cfg (install with `pip install .`)."""

from setuptools import setup

setup()
