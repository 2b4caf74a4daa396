"""Face detection as a warm worker (worker mode, docs/WORKERS.md).

The same detection as detect.py (its `detect` function, imported, not
copied), served over the operator's gRPC stream by the Python SDK
(clients/python-worker): the process starts once, loads OpenCV once, and
runs job after job; each job's result is what detect.py would write to its
termination message.

Environment (the operator sets the first three on its worker pods, see
src/workers/worker_pod.rs):
  VISION_WORKER_ENDPOINT    the operator's worker endpoint, http://HOST:PORT
  VISION_WORKER_ID          this worker's name (its pod's name)
  VISION_WORKER_TOKEN_FILE  the pod's projected ServiceAccount token
                            (audience vision-operator)
  VISION_WORKER_ALGORITHM   the VisionAlgorithm to serve; the manifest
                            (examples/algorithms/face-detect-worker.yaml)
                            takes it from the pod's label
                            vision.zjlab.io/algorithm.

A job the algorithm cannot run fails its attempt with the reason InvalidJob
(detect.py's exit 2); an output directory it cannot write, OutputError
(exit 3). The operator refusing this worker (a pod not labelled for the
algorithm, a bad token) ends the process with exit 4 and the reason on
stderr and in the termination message.
"""

import logging
import os
import sys

import detect
import vision_worker

# One job at a time: the manifest's workers.tasksPerWorker.
CAPACITY = 1


def handle(job, task):
    """One task: the job as pod mode passes it in $VISION_JOB."""
    print(f"job {job.get('namespace')}/{job.get('name')} attempt {task.attempt}", flush=True)
    try:
        return detect.detect(job)
    except detect.JobError as e:
        raise vision_worker.TaskError("InvalidJob", str(e)) from e
    except detect.OutputError as e:
        raise vision_worker.TaskError("OutputError", str(e)) from e


def main():
    algorithm = os.environ.get("VISION_WORKER_ALGORITHM", "")
    if not algorithm:
        print("face-detect worker: VISION_WORKER_ALGORITHM is not set", file=sys.stderr, flush=True)
        return 2
    # The SDK's connects, refusals and retries, on stderr (the pod's log).
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    import cv2  # the warm part: loaded once, before the first task

    print(f"face-detect worker: serving {algorithm} with OpenCV {cv2.__version__}", flush=True)
    try:
        vision_worker.run(handle, algorithm=algorithm, capacity=CAPACITY)
    except vision_worker.Refused as e:
        message = f"face-detect worker: the operator refused this worker: {e}"
        print(message, file=sys.stderr, flush=True)
        try:
            with open(detect.TERMINATION_LOG, "w", encoding="utf-8") as f:
                f.write(message)
        except OSError:
            pass
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
