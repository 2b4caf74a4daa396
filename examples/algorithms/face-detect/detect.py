"""Face detection, a real vision algorithm for vision-operator.

Reads its VisionJob from $VISION_JOB (or /etc/vision/job.json), runs OpenCV's
Haar cascade face detector on CPU on the job's image, and writes the
detections as JSON to /dev/termination-log, where the operator reads the
result (Kubernetes keeps at most 4 KiB of it). Everything it needs is in the
image: OpenCV and its cascade files (from the opencv-python-headless wheel)
and the sample images under /opt/vision/images; nothing is downloaded.

Job input:  {"image": "astronaut.jpg"}  (a file under /opt/vision/images) or
            {"uri": "file:///path/in/the/container.jpg"}
Job params: {"scaleFactor": 1.1, "minNeighbors": 5, "minSize": 30,
             "maxDetections": 20}
Result:     {"image": ..., "width": W, "height": H, "model": ...,
             "detections": [{"label": "face", "box": [x, y, w, h],
                             "score": S}, ...]}

A job with spec.output gets a directory of its own on a PersistentVolumeClaim,
mounted at $VISION_OUTPUT_DIR: there the algorithm writes the image with the
detected faces boxed (JPEG), and the result lists it with its size and digest:
            "outputs": [{"path": "astronaut-faces.jpg", "size": N,
                         "sha256": "...", "mediaType": "image/jpeg"}]
(path relative to the directory; status.output names the claim and the
directory). Without $VISION_OUTPUT_DIR nothing is written and the result has
no "outputs".
"""

import hashlib
import json
import os
import sys

IMAGES = "/opt/vision/images"
TERMINATION_LOG = os.environ.get("VISION_RESULT_FILE", "/dev/termination-log")
# Kubernetes truncates a termination message beyond 4096 bytes.
RESULT_LIMIT = 4096
# The job's output directory (set by the operator for a job with spec.output).
OUTPUT_DIR_ENV = "VISION_OUTPUT_DIR"
# Boxes drawn on the annotated image: BGR green, 2 pixels wide.
BOX_COLOR = (0, 255, 0)
BOX_THICKNESS = 2
JPEG_QUALITY = 90


class JobError(Exception):
    """A job this algorithm cannot run: the message says what to change."""


class OutputError(Exception):
    """The output directory cannot take the outputs (permissions, space)."""


def load_job():
    text = os.environ.get("VISION_JOB")
    if not text:
        try:
            with open("/etc/vision/job.json", encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError as e:
            raise JobError("no job: neither $VISION_JOB nor /etc/vision/job.json is set") from e
    try:
        job = json.loads(text)
    except json.JSONDecodeError as e:
        raise JobError(f"the job is not JSON: {e}") from e
    if not isinstance(job, dict):
        raise JobError("the job must be a JSON object")
    return job


def image_path(job_input):
    if not isinstance(job_input, dict):
        raise JobError('input must be an object such as {"image": "astronaut.jpg"}')
    if "image" in job_input:
        name = str(job_input["image"])
        if "/" in name or name.startswith("."):
            raise JobError(f"input.image {name!r} must be a file name under {IMAGES}")
        return os.path.join(IMAGES, name)
    uri = str(job_input.get("uri", ""))
    if uri.startswith("file://"):
        return uri[len("file://"):]
    raise JobError(f"input needs image (a file in {IMAGES}) or a file:// uri; got {job_input!r}")


def number(params, key, default, kind):
    value = params.get(key, default)
    try:
        return kind(value)
    except (TypeError, ValueError) as e:
        raise JobError(f"params.{key} must be a number, got {value!r}") from e


def write_file(directory, name, data):
    """Writes data to directory/name atomically: a reader of the claim sees
    the whole file or none (a temporary name, then a rename)."""
    final = os.path.join(directory, name)
    partial = os.path.join(directory, f".{name}.partial")
    with open(partial, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, final)


def write_annotated(cv2, image, detections, path, directory):
    """The image with the detections boxed, as JPEG in the output directory;
    returns its entry of the result's "outputs"."""
    annotated = image.copy()
    for d in detections:
        x, y, w, h = d["box"]
        cv2.rectangle(annotated, (x, y), (x + w, y + h), BOX_COLOR, BOX_THICKNESS)
    ok, encoded = cv2.imencode(".jpg", annotated, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OutputError("OpenCV could not encode the annotated image as JPEG")
    data = encoded.tobytes()
    name = os.path.splitext(os.path.basename(path))[0] + "-faces.jpg"
    try:
        write_file(directory, name, data)
    except OSError as e:
        raise OutputError(f"cannot write {name} to ${OUTPUT_DIR_ENV} ({directory}): {e}") from e
    return {
        "path": name,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "mediaType": "image/jpeg",
    }


def detect(job):
    import cv2  # imported here so that a bad job fails fast with a clear message

    params = job.get("params") or {}
    if not isinstance(params, dict):
        raise JobError("params must be an object")
    path = image_path(job.get("input"))
    image = cv2.imread(path)
    if image is None:
        raise JobError(f"cannot read the image {path}")
    height, width = image.shape[:2]
    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    model = "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, model))
    if cascade.empty():
        raise JobError(f"cannot load the cascade {model}")
    min_size = number(params, "minSize", 30, int)
    boxes, _, weights = cascade.detectMultiScale3(
        gray,
        scaleFactor=number(params, "scaleFactor", 1.1, float),
        minNeighbors=number(params, "minNeighbors", 5, int),
        minSize=(min_size, min_size),
        outputRejectLevels=True,
    )
    detections = [
        {"label": "face", "box": [int(v) for v in box], "score": round(float(weight), 3)}
        for box, weight in zip(boxes, weights)
    ]
    detections.sort(key=lambda d: -d["score"])
    limit = number(params, "maxDetections", 20, int)
    result = {
        "image": os.path.basename(path),
        "width": width,
        "height": height,
        "model": f"opencv-{cv2.__version__}/{model}",
        "detections": detections[:limit],
    }
    output_dir = os.environ.get(OUTPUT_DIR_ENV)
    if output_dir:
        result["outputs"] = [write_annotated(cv2, image, result["detections"], path, output_dir)]
    # Stay within the termination message limit: drop the weakest detections.
    while len(json.dumps(result)) > RESULT_LIMIT and result["detections"]:
        result["detections"].pop()
        result["truncated"] = True
    return result


def main():
    try:
        job = load_job()
        print(f"job {job.get('namespace')}/{job.get('name')} attempt {job.get('attempt')}", flush=True)
        result = detect(job)
    except JobError as e:
        # The message is the log tail the operator reports (FallbackToLogsOnError).
        print(f"face-detect: {e}", file=sys.stderr, flush=True)
        return 2
    except OutputError as e:
        print(f"face-detect: {e}", file=sys.stderr, flush=True)
        return 3
    text = json.dumps(result, separators=(",", ":"))
    print(text, flush=True)
    with open(TERMINATION_LOG, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
