"""Build hook only (the metadata is in pyproject.toml): the wheel carries the job scripts and the examples
inside the package, as distcaffe/scripts/ and distcaffe/examples/, so `distcaffe scripts` and
`distcaffe examples` work from a pip install. Only source files go in, never generated data or weights."""
import fnmatch
import os

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = {"scripts": ("*.sh", "*.sbatch", "*.pbs"), "examples": ("*.prototxt", "*.py", "*.md")}


class BuildPy(build_py):
    def run(self):
        super().run()
        for folder, patterns in SHIPPED.items():
            for root, dirs, files in os.walk(folder):
                dirs[:] = [d for d in dirs if d not in ("data", "__pycache__")]
                for name in files:
                    if any(fnmatch.fnmatch(name, p) for p in patterns):
                        src = os.path.join(root, name)
                        dst = os.path.join(self.build_lib, "distcaffe", src)
                        self.mkpath(os.path.dirname(dst))
                        self.copy_file(src, dst)


setup(cmdclass={"build_py": BuildPy})
