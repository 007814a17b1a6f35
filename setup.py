"""Packaging for mechat.  The runtime needs the standard library only."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "mechat" / "__init__.py").read_text()).group(1)

setup(
    name="mechat",
    version=VERSION,
    description="A teaching chat server that pairs two strangers, with its client, spec and docs",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["mechat", "mechat.*"]),
    python_requires=">=3.9",
    install_requires=[],
    entry_points={"console_scripts": ["mechat = mechat.__main__:main"]},
    classifiers=[
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Communications :: Chat",
        "Topic :: Education",
    ],
)
