"""Maps the top-level offload/ and bench/ folders to fastpath.offload and fastpath.bench."""
from setuptools import find_packages, setup

EXTRA = {"fastpath.offload": "offload", "fastpath.bench": "bench"}
packages = find_packages("src")
for name, folder in EXTRA.items():
    packages += [name] + [f"{name}.{p}" for p in find_packages(folder)]
package_dir = {"": "src", **EXTRA}
setup(packages=packages, package_dir=package_dir)
