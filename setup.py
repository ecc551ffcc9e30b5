"""Build hook only (the project is described in pyproject.toml): the wheel carries the sample
clip, kept at the top of the checkout for the course's layout, as mjpeg_rtsp/sample/movie.Mjpeg,
where the installed server looks for it when its working directory has no media."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SAMPLE = "movie.Mjpeg"


class BuildPyWithSample(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib, "mjpeg_rtsp", "sample")
        self.mkpath(str(target))
        self.copy_file(str(Path(__file__).parent / SAMPLE), str(target / SAMPLE))


setup(cmdclass={"build_py": BuildPyWithSample})
