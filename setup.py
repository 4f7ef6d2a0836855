# The project is described in pyproject.toml; this file only names the C
# kernels, which cffi's setuptools hook compiles at install time.
from setuptools import setup

setup(cffi_modules=["nicdev/virtio/kernels_build.py:ffibuilder"])
