# shellcheck shell=bash
# Container images built offline (no engine, no registry), sourced by
# hack/cluster.sh. Each image is a Dockerfile that only assembles files
# (FROM scratch + COPY), built by hack/images/oci_image.py into an OCI archive
# cached in $CACHE/images/<name>-<hash>.tar (hash of every input), and
# imported into the real node's containerd. See hack/README.md ("Images").

IMAGES="$ROOT/hack/images"
IMAGE_REPO=localhost/vision
# The operator image: the repository's own Dockerfile, the same file users
# build with docker (docs/INSTALL.md).
OPERATOR_TARGET=x86_64-unknown-linux-gnu
# The Cargo profile of the tested image: image-test (Cargo.toml) builds in a
# fraction of release's time; VISION_OPERATOR_PROFILE=release tests exactly
# what users ship.
OPERATOR_PROFILE="${VISION_OPERATOR_PROFILE:-image-test}"
OPERATOR_BINARY="$ROOT/target/$OPERATOR_TARGET/$OPERATOR_PROFILE/vision-operator"

# image_ref NAME: the reference an image is imported as (tag = input hash).
image_ref() { echo "$IMAGE_REPO/$1:$(image_hash "$1")"; }

# image_hash NAME: hash of everything the image is made of.
image_hash() {
  case "$1" in
    pause | probe)
      cat "$IMAGES/oci_image.py" "$IMAGES/$1/Dockerfile" "$IMAGES/$1/$1.c" | sha256sum | cut -c1-12 ;;
    probe-root)
      cat "$IMAGES/oci_image.py" "$IMAGES/$1/Dockerfile" "$IMAGES/probe/probe.c" | sha256sum | cut -c1-12 ;;
    face-detect)
      local d="$ROOT/examples/algorithms/face-detect"
      local sdk="$ROOT/clients/python-worker/src/vision_worker"
      cat "$IMAGES/oci_image.py" "$d/Dockerfile" "$d/detect.py" "$d/worker.py" "$d/build-rootfs.sh" "$d/requirements.txt" "$d"/images/* \
        "$sdk"/*.py "$sdk"/_proto/*.py |
        sha256sum | cut -c1-12 ;;
    operator)
      [ -x "$OPERATOR_BINARY" ] || die "no $OPERATOR_BINARY: build it first (image_build operator)"
      cat "$IMAGES/oci_image.py" "$ROOT/Dockerfile" "$ROOT/.dockerignore" "$OPERATOR_BINARY" <(echo "$OPERATOR_PROFILE") |
        sha256sum | cut -c1-12 ;;
    *) die "unknown image $1 (pause, probe, probe-root, operator, face-detect)" ;;
  esac
}

# The operator binary, static (glibc's static libc: no musl target can be
# installed here), exactly as docs/INSTALL.md tells users to build it. Its
# target directory is in the cache ($VISION_CACHE_DIR/cargo-target), so that
# a fresh clone (CI) rebuilds only the workspace's own crates; the binary is
# then put where the Dockerfile copies it from.
operator_binary() {
  log "building the static operator binary (cargo build --profile $OPERATOR_PROFILE --target $OPERATOR_TARGET)"
  local start=$SECONDS target="${VISION_OPERATOR_TARGET_DIR:-$CACHE/cargo-target}"
  (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$target" \
    cargo build --profile "$OPERATOR_PROFILE" --locked --target "$OPERATOR_TARGET" --bin vision-operator) \
    >"$LOGS/build-operator.log" 2>&1 || { tail -n 30 "$LOGS/build-operator.log" >&2; die "cargo build of the operator failed"; }
  if [ "$target/$OPERATOR_TARGET/$OPERATOR_PROFILE/vision-operator" -ef "$OPERATOR_BINARY" ]; then :; else
    mkdir -p "$(dirname "$OPERATOR_BINARY")"
    # $$: concurrent builds (two tests at once) each rename their own copy.
    cp "$target/$OPERATOR_TARGET/$OPERATOR_PROFILE/vision-operator" "$OPERATOR_BINARY.tmp.$$"
    mv "$OPERATOR_BINARY.tmp.$$" "$OPERATOR_BINARY"
  fi
  log "operator binary ready in $((SECONDS - start))s"
}

# image_build NAME: builds (or finds in the cache) the image's OCI archive and
# prints "<archive> <reference>".
image_build() {
  local name="$1" ref out ctx
  [ "$name" = operator ] && operator_binary
  ref="$(image_ref "$name")"
  out="$CACHE/images/$name-${ref##*:}.tar"
  if [ ! -f "$out" ]; then
    mkdir -p "$CACHE/images"
    case "$name" in
      pause | probe | probe-root)
        # The context: the Dockerfile and the program, compiled statically
        # (probe-root is the probe with another Dockerfile).
        local program="${name%-root}"
        ctx="$(mktemp -d)"
        cp "$IMAGES/$name/Dockerfile" "$ctx/"
        gcc -static -Os -Wall -o "$ctx/$program" "$IMAGES/$program/$program.c" || die "compiling $program.c failed"
        python3 "$IMAGES/oci_image.py" --context "$ctx" --name "$ref" --out "$out" >/dev/null ||
          { rm -rf "$ctx"; die "building the $name image failed"; }
        rm -rf "$ctx" ;;
      face-detect)
        # The context: the root filesystem (Debian packages, wheels, the
        # Python worker SDK) and the algorithm's files, as
        # examples/algorithms/face-detect/README.md says.
        local d="$ROOT/examples/algorithms/face-detect"
        ctx="$(mktemp -d "$CACHE/images/.ctx-face-detect.XXXXXX")"
        "$d/build-rootfs.sh" "$ctx" >"$LOGS/build-face-detect.log" 2>&1 ||
          { tail -n 20 "$LOGS/build-face-detect.log" >&2; rm -rf "$ctx"; die "building the face-detect root filesystem failed"; }
        cp -r "$d/Dockerfile" "$d/detect.py" "$d/worker.py" "$d/images" "$ctx/"
        python3 "$IMAGES/oci_image.py" --context "$ctx" --name "$ref" --out "$out" >/dev/null ||
          { rm -rf "$ctx"; die "building the face-detect image failed"; }
        rm -rf "$ctx" ;;
      operator)
        python3 "$IMAGES/oci_image.py" --context "$ROOT" --file "$ROOT/Dockerfile" \
          --build-arg "PROFILE=$OPERATOR_PROFILE" --name "$ref" --out "$out" >/dev/null ||
          die "building the operator image from Dockerfile failed" ;;
    esac
    log "built image $ref"
  fi
  echo "$out $ref"
}
