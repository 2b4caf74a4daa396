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
"""

import json
import os
import sys

IMAGES = "/opt/vision/images"
TERMINATION_LOG = os.environ.get("VISION_RESULT_FILE", "/dev/termination-log")
# Kubernetes truncates a termination message beyond 4096 bytes.
RESULT_LIMIT = 4096


class JobError(Exception):
    """A job this algorithm cannot run: the message says what to change."""


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
    text = json.dumps(result, separators=(",", ":"))
    print(text, flush=True)
    with open(TERMINATION_LOG, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
