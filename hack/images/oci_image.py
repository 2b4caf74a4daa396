#!/usr/bin/env python3
"""Builds an OCI image archive from a Dockerfile, without a container engine.

The local cluster has no registry and no Docker: this builds the very same
Dockerfiles that users give to `docker build`, as long as they only assemble
files (`FROM scratch`, `COPY`, and metadata: `USER`, `ENTRYPOINT`, `CMD`,
`ENV`, `WORKDIR`, `LABEL`, `EXPOSE`, `ARG`). Anything that would need to run
a container (`RUN`, another base image) is refused with a clear error, so the
two build paths cannot drift apart.

The result is an OCI image layout in a tar archive (`oci-layout`,
`index.json`, `blobs/sha256/...`), one uncompressed layer per COPY, every file
owned by root (or --chown) with mtime 0: the same inputs give the same image
digest. `ctr -n k8s.io images import` takes it as it is; the image's name is
in the `io.containerd.image.name` annotation.

    oci_image.py --context DIR [--file DIR/Dockerfile] --name REF --out IMAGE.tar
"""

import argparse
import fnmatch
import hashlib
import io
import json
import os
import re
import shlex
import stat
import sys
import tarfile


class BuildError(Exception):
    """A Dockerfile this builder cannot build, or a missing input."""


def instructions(text):
    """Yields (KEYWORD, argument text) of a Dockerfile, joining continuations."""
    line = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not line and (not stripped or stripped.startswith("#")):
            continue
        if line and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            line += stripped[:-1] + " "
            continue
        line += stripped
        keyword, _, rest = line.partition(" ")
        yield keyword.upper(), rest.strip()
        line = ""
    if line:
        raise BuildError("the Dockerfile ends inside a continued line")


# `$NAME`, `${NAME}` and `${NAME:-default}`, as Docker expands build args.
VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")

# The instructions whose argument Docker expands variables in.
EXPANDED = {"COPY", "ENV", "LABEL", "USER", "WORKDIR", "EXPOSE"}


def expand(arg, variables):
    """Substitutes the declared build args in an instruction's argument
    (an undeclared one is empty, as in Docker)."""
    def value(m):
        name = m.group("braced") or m.group("bare")
        found = variables.get(name)
        if found is None or (found == "" and m.group("default") is not None):
            return m.group("default") or ""
        return found
    return VARIABLE.sub(value, arg)


def declare(arg, build_args, variables):
    """ARG NAME[=default]: its value is the --build-arg given, else the default."""
    name, has_default, default = arg.partition("=")
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise BuildError(f"ARG {arg}: not a valid name")
    if name in build_args:
        variables[name] = build_args[name]
    elif has_default:
        variables[name] = shlex.split(default)[0] if default.strip() else ""
    else:
        variables.setdefault(name, "")


def json_or_shell(arg, keyword):
    """ENTRYPOINT/CMD: only the exec (JSON) form; there is no shell in scratch."""
    try:
        value = json.loads(arg)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BuildError(f"{keyword} must use the JSON exec form, e.g. {keyword} [\"/bin/app\"]")
    return value


def key_values(arg):
    """ENV/LABEL arguments: k=v pairs (shell-quoted) or the legacy `k v` form."""
    words = shlex.split(arg)
    if words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    pairs = []
    for word in words:
        if "=" not in word:
            raise BuildError(f"expected key=value, got {word!r}")
        key, _, value = word.partition("=")
        pairs.append((key, value))
    return pairs


class Ignore:
    """The context's .dockerignore: the last matching pattern decides."""

    def __init__(self, context):
        self.patterns = []
        path = os.path.join(context, ".dockerignore")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    negate = line.startswith("!")
                    pattern = line[1:] if negate else line
                    self.patterns.append((negate, pattern.strip("/")))

    def ignored(self, rel):
        parts = rel.split("/")
        result = False
        for negate, pattern in self.patterns:
            # A pattern matches the path itself or any of its parent directories.
            for i in range(1, len(parts) + 1):
                if fnmatch.fnmatchcase("/".join(parts[:i]), pattern):
                    result = not negate
                    break
        return result


class Layer:
    """One COPY: a deterministic tar of the copied files."""

    def __init__(self, uid, gid, chmod):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.uid, self.gid, self.chmod = uid, gid, chmod
        self.dirs = set()

    def _info(self, name, kind, mode):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = self.uid, self.gid
        info.mtime = 0
        return info

    def _parents(self, name):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                self.tar.addfile(self._info(d, tarfile.DIRTYPE, 0o755))

    def add(self, src, dest):
        """Adds the file, link or directory entry src at path dest (no leading /)."""
        self._parents(dest)
        st = os.lstat(src)
        if stat.S_ISLNK(st.st_mode):
            info = self._info(dest, tarfile.SYMTYPE, 0o777)
            info.linkname = os.readlink(src)
            self.tar.addfile(info)
        elif stat.S_ISDIR(st.st_mode):
            if dest not in self.dirs:
                self.dirs.add(dest)
                mode = self.chmod if self.chmod is not None else stat.S_IMODE(st.st_mode)
                self.tar.addfile(self._info(dest, tarfile.DIRTYPE, mode))
        elif stat.S_ISREG(st.st_mode):
            mode = self.chmod if self.chmod is not None else stat.S_IMODE(st.st_mode)
            info = self._info(dest, tarfile.REGTYPE, mode)
            info.size = st.st_size
            with open(src, "rb") as f:
                self.tar.addfile(info, f)
        else:
            raise BuildError(f"cannot copy {src}: not a file, directory or symlink")

    def close(self):
        self.tar.close()
        return self.buf.getvalue()


def copy(context, ignore, args, workdir):
    """Builds the layer of one COPY instruction."""
    words = shlex.split(args)
    uid = gid = 0
    chmod = None
    while words and words[0].startswith("--"):
        flag, _, value = words.pop(0).partition("=")
        if flag == "--chown":
            user, _, group = value.partition(":")
            if not user.isdigit() or (group and not group.isdigit()):
                raise BuildError("COPY --chown needs numeric ids (there is no /etc/passwd in scratch)")
            uid, gid = int(user), int(group or user)
        elif flag == "--chmod":
            chmod = int(value, 8)
        else:
            raise BuildError(f"COPY {flag} is not supported by this builder")
    if len(words) < 2:
        raise BuildError(f"COPY needs a source and a destination: COPY {args}")
    *sources, dest = words
    if not dest.startswith("/"):
        dest = os.path.join(workdir, dest)
    layer = Layer(uid, gid, chmod)
    into_dir = dest.endswith("/") or len(sources) > 1
    dest = dest.strip("/")
    for source in sources:
        rel = os.path.normpath(source).lstrip("/")
        if rel.startswith(".."):
            raise BuildError(f"COPY source {source} is outside the context")
        path = os.path.join(context, rel)
        if rel != "." and ignore.ignored(rel):
            raise BuildError(f"COPY source {source} is excluded by .dockerignore")
        if not os.path.lexists(path):
            raise BuildError(f"COPY source {source} does not exist in {context}")
        if os.path.isdir(path) and not os.path.islink(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(dirs) + sorted(files):
                    full = os.path.join(root, name)
                    sub = os.path.relpath(full, path)
                    crel = os.path.relpath(full, context)
                    if ignore.ignored(crel):
                        continue
                    layer.add(full, f"{dest}/{sub}".lstrip("/"))
        else:
            target = f"{dest}/{os.path.basename(rel)}" if into_dir else dest
            layer.add(path, target.lstrip("/"))
    return layer.close()


def build(context, dockerfile, name, build_args=None):
    """Returns the blobs {digest: bytes} and the index of the image."""
    build_args = build_args or {}
    variables = {}
    with open(dockerfile, encoding="utf-8") as f:
        text = f.read()
    ignore = Ignore(context)
    config = {}
    layers, history = [], []
    workdir = "/"
    seen_from = False
    for keyword, arg in instructions(text):
        if keyword == "ARG":
            declare(arg, build_args, variables)
            continue
        if keyword in EXPANDED:
            arg = expand(arg, variables)
        if keyword == "FROM":
            base = arg.split()[0]
            if base != "scratch":
                raise BuildError(
                    f"FROM {base}: this builder only assembles files on scratch "
                    "(build the root filesystem first and COPY it)"
                )
            if seen_from:
                raise BuildError("multi-stage Dockerfiles are not supported")
            seen_from = True
        elif not seen_from:
            raise BuildError(f"{keyword} before FROM")
        elif keyword == "COPY":
            layers.append(copy(context, ignore, arg, workdir))
        elif keyword == "USER":
            config["User"] = arg
        elif keyword == "ENTRYPOINT":
            config["Entrypoint"] = json_or_shell(arg, keyword)
        elif keyword == "CMD":
            config["Cmd"] = json_or_shell(arg, keyword)
        elif keyword == "WORKDIR":
            workdir = os.path.join(workdir, arg)
            config["WorkingDir"] = workdir
        elif keyword == "ENV":
            env = dict(e.split("=", 1) for e in config.get("Env", []))
            env.update(key_values(arg))
            config["Env"] = [f"{k}={v}" for k, v in env.items()]
        elif keyword == "LABEL":
            config.setdefault("Labels", {}).update(key_values(arg))
        elif keyword == "EXPOSE":
            for port in arg.split():
                if "/" not in port:
                    port += "/tcp"
                config.setdefault("ExposedPorts", {})[port] = {}
        else:
            raise BuildError(f"{keyword} is not supported: the image must be built without running a container")
        history.append({"created": "1970-01-01T00:00:00Z", "created_by": f"{keyword} {arg}",
                        **({} if keyword == "COPY" else {"empty_layer": True})})
    if not seen_from:
        raise BuildError("no FROM")

    blobs = {}

    def blob(data, media_type):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    layer_descs = [blob(data, "application/vnd.oci.image.layer.v1.tar") for data in layers]
    image_config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layer_descs]},
        "history": history,
    }
    config_desc = blob(json.dumps(image_config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layer_descs,
    }
    manifest_desc = blob(json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")
    manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    manifest_desc["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
    }
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_desc]}
    return blobs, index


def write_archive(out, blobs, index):
    # Unique per process: two builds of the same image at once (two tests
    # of one run) must not write, then rename, the same temporary file.
    tmp = f"{out}.{os.getpid()}.tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:

        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", json.dumps(index, sort_keys=True).encode())
        for digest in sorted(blobs):
            add("blobs/sha256/" + digest.split(":", 1)[1], blobs[digest])
    os.replace(tmp, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", required=True, help="build context directory")
    parser.add_argument("--file", help="the Dockerfile (default: CONTEXT/Dockerfile)")
    parser.add_argument("--name", required=True, help="image reference, e.g. localhost/vision/pause:1")
    parser.add_argument("--out", required=True, help="the OCI archive to write")
    parser.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a value for an ARG of the Dockerfile (repeatable)")
    args = parser.parse_args()
    try:
        build_args = {}
        for item in args.build_arg:
            key, sep, value = item.partition("=")
            if not sep:
                raise BuildError(f"--build-arg {item}: expected KEY=VALUE")
            build_args[key] = value
        blobs, index = build(args.context, args.file or os.path.join(args.context, "Dockerfile"), args.name,
                             build_args)
    except BuildError as e:
        print(f"oci_image.py: {e}", file=sys.stderr)
        return 1
    write_archive(args.out, blobs, index)
    print(index["manifests"][0]["digest"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
