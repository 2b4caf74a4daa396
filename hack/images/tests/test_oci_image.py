"""Tests of the offline image builder (hack/images/oci_image.py): the
Dockerfile instructions it accepts, ARG/--build-arg expansion, and that it
refuses what would need a container engine. Run by hack/test.sh:

    python3 -m unittest discover -s hack/images/tests
"""

import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import oci_image  # noqa: E402


def write(root, rel, text, mode=0o644):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


class Image:
    """An image built from a Dockerfile text in a scratch context."""

    def __init__(self, dockerfile, files, build_args=None):
        self.dir = tempfile.TemporaryDirectory()
        ctx = self.dir.name
        for rel, text in files.items():
            write(ctx, rel, text, 0o755)
        write(ctx, "Dockerfile", dockerfile)
        try:
            self.blobs, self.index = oci_image.build(ctx, os.path.join(ctx, "Dockerfile"), "localhost/t:1", build_args)
        except BaseException:
            self.dir.cleanup()
            raise
        manifest = self.blob(self.index["manifests"][0]["digest"])
        self.config = self.blob(manifest["config"]["digest"])
        self.layers = [self.blobs[layer["digest"]] for layer in manifest["layers"]]

    def blob(self, digest):
        return json.loads(self.blobs[digest])

    def files(self):
        """{path: bytes} of every regular file in the layers."""
        out = {}
        for data in self.layers:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        out[member.name] = tar.extractfile(member).read()
        return out

    def close(self):
        self.dir.cleanup()


class BuildArgs(unittest.TestCase):
    DOCKERFILE = """FROM scratch
ARG PROFILE=release
ARG USER_ID
COPY target/${PROFILE}/app /usr/local/bin/app
LABEL profile="$PROFILE" other=${MISSING:-fallback}
USER ${USER_ID:-65532}:65532
ENTRYPOINT ["/usr/local/bin/app"]
"""
    FILES = {"target/release/app": "release binary", "target/image-test/app": "test binary"}

    def build(self, build_args=None):
        image = Image(self.DOCKERFILE, self.FILES, build_args)
        self.addCleanup(image.close)
        return image

    def test_the_default_of_an_arg_is_used_without_a_build_arg(self):
        image = self.build()
        self.assertEqual(image.files(), {"usr/local/bin/app": b"release binary"})
        self.assertEqual(image.config["config"]["Labels"], {"profile": "release", "other": "fallback"})
        self.assertEqual(image.config["config"]["User"], "65532:65532")

    def test_a_build_arg_replaces_the_default_everywhere_it_is_used(self):
        image = self.build({"PROFILE": "image-test", "USER_ID": "1000"})
        self.assertEqual(image.files(), {"usr/local/bin/app": b"test binary"})
        self.assertEqual(image.config["config"]["Labels"]["profile"], "image-test")
        self.assertEqual(image.config["config"]["User"], "1000:65532")

    def test_the_same_inputs_give_the_same_digest(self):
        first = self.build({"PROFILE": "image-test"}).index["manifests"][0]["digest"]
        second = self.build({"PROFILE": "image-test"}).index["manifests"][0]["digest"]
        self.assertEqual(first, second)
        blob = self.build().blobs
        for digest, data in blob.items():
            self.assertEqual("sha256:" + hashlib.sha256(data).hexdigest(), digest)

    def test_a_missing_source_after_expansion_is_an_error_naming_it(self):
        with self.assertRaisesRegex(oci_image.BuildError, "target/debug/app does not exist"):
            self.build({"PROFILE": "debug"})


class Refusals(unittest.TestCase):
    def refused(self, dockerfile, message):
        with self.assertRaisesRegex(oci_image.BuildError, message):
            Image(dockerfile, {"a": "x"}).close()

    def test_a_base_image_other_than_scratch_is_refused(self):
        self.refused("FROM debian:trixie\nCOPY a /a\n", "only assembles files on scratch")

    def test_run_is_refused(self):
        self.refused("FROM scratch\nRUN echo hi\n", "RUN is not supported")

    def test_a_shell_form_entrypoint_is_refused(self):
        self.refused("FROM scratch\nENTRYPOINT /a\n", "JSON exec form")

    def test_an_invalid_arg_name_is_refused(self):
        self.refused("FROM scratch\nARG 1X=2\n", "not a valid name")


class TheRepositorysDockerfile(unittest.TestCase):
    """The operator's Dockerfile builds with each profile's binary."""

    def test_it_copies_the_binary_of_the_profile_given(self):
        root = os.path.join(os.path.dirname(__file__), "..", "..", "..")
        with open(os.path.join(root, "Dockerfile"), encoding="utf-8") as f:
            dockerfile = f.read()
        for profile in ("release", "image-test"):
            binary = f"target/x86_64-unknown-linux-gnu/{profile}/vision-operator"
            image = Image(dockerfile, {binary: profile}, {"PROFILE": profile} if profile != "release" else None)
            self.addCleanup(image.close)
            self.assertEqual(image.files(), {"usr/local/bin/vision-operator": profile.encode()})
            self.assertEqual(image.config["config"]["User"], "65532:65532")
            self.assertEqual(image.config["config"]["Entrypoint"], ["/usr/local/bin/vision-operator"])


if __name__ == "__main__":
    unittest.main()
