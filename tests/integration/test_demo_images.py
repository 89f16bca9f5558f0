"""The demo's images are tagged by a hash of their inputs and rebuilt only when those change."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def run(*args, **env):
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=True, env={**os.environ, **env}
    )


def tags(result):
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


@pytest.fixture(scope="module")
def built():
    return tags(run(SCRIPTS / "demo_images.sh"))


def test_second_run_builds_nothing_and_gives_the_same_tags(built):
    again = run(SCRIPTS / "demo_images.sh")
    assert tags(again) == built
    assert "building" not in again.stderr
    assert sorted(built) == ["APP_IMAGE", "DB_IMAGE", "FLOWER_IMAGE", "REDIS_IMAGE"]


def test_changing_one_image_input_changes_only_its_tag(built, tmp_path):
    images = tmp_path / "docker"
    shutil.copytree(ROOT / "examples/demo_app/docker", images)
    with open(images / "redis/Dockerfile", "a") as dockerfile:
        dockerfile.write("# a changed input\n")
    changed = tags(run(SCRIPTS / "demo_images.sh", DEMO_IMAGES_DIR=images))
    try:
        assert changed["REDIS_IMAGE"] != built["REDIS_IMAGE"]
        assert changed["APP_IMAGE"] == built["APP_IMAGE"]
        assert changed["DB_IMAGE"] == built["DB_IMAGE"]
    finally:
        subprocess.run(["docker", "image", "rm", changed["REDIS_IMAGE"]], capture_output=True, check=False)


def test_install_docker_changes_nothing_where_docker_works():
    result = run(SCRIPTS / "install_docker.sh")
    assert result.stdout == "" and result.stderr == ""
