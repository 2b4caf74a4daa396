"""The web view of ``visionctl ui`` in headless Chromium, against the local
cluster during a burst of jobs: what a person sees must be what the API
server says.

The world (the cluster turn, a namespace, queue ``pool-<ns>`` with 20
slots, algorithm ``detect-<ns>`` on KWOK nodes, an operator) is the Python
client's (clients/python/tests/cluster.py). A burst of 300 jobs goes in
while the page is open: 260 short ones (every tenth fails) and 40 that run
for an hour, so that the queue settles with 20 running and 20 waiting
(SlotsFull). The test then compares the page's counts with a listing of
the jobs, exactly, and checks a phase filter, a name search and a job's
page. Screenshots go to .local/artifacts/browser/.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client as k8s
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.cluster import GROUP, REPO, VERSION, World, kubeconfig_path, wait_for

pytestmark = pytest.mark.e2e

SIM_DURATION = "sim.vision.zjlab.io/duration"
SIM_MESSAGE = "sim.vision.zjlab.io/message"
SIM_OUTCOME = "sim.vision.zjlab.io/outcome"
ARTIFACTS = REPO / ".local" / "artifacts" / "browser"
SLOTS = 20
SHORT, LONG = 260, 40
RESULT = {"objects": [{"label": "car", "score": 0.9}]}
PHASES = ["Pending", "Queued", "Admitted", "Running", "Succeeded", "Failed", "Rejected", "Suspended"]
#: How long the cluster and the page may take to settle.
T = 180.0

R = TypeVar("R")


def visionctl_binary() -> Path:
    """``$VISION_VISIONCTL_BIN``, else ``<cargo target dir>/debug/visionctl``."""
    explicit = os.environ.get("VISION_VISIONCTL_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    binary = (target if target.is_absolute() else REPO / target) / "debug" / "visionctl"
    if not binary.exists():
        raise RuntimeError(
            f"{binary} missing: build it first"
            " (cargo build --workspace --bins --tests --features e2e; hack/test.sh does)"
        )
    return binary


class Ui:
    """``visionctl ui`` as a child process, with the test cluster's admin
    kubeconfig or another one."""

    def __init__(self, kubeconfig: Path | None = None, log: str = "visionctl-ui") -> None:
        logs = REPO / ".local" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.stderr = (logs / f"{log}.log").open("wb")
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        self.process = subprocess.Popen(
            [str(visionctl_binary()), "--kubeconfig", str(kubeconfig or kubeconfig_path()), "ui"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "http://" not in line:
            self.stop()
            raise RuntimeError(f"visionctl ui printed {line!r} (log: {self.stderr.name})")
        self.url = line[line.index("http://") :].split()[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    w = World("webview", queue_slots=SLOTS, algorithm_annotations={SIM_DURATION: "1s"})
    try:
        yield w
    finally:
        w.close()


@pytest.fixture(scope="module")
def ui(world: World) -> Iterator[Ui]:
    u = Ui()
    try:
        yield u
    finally:
        u.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("VISION_CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1900"):
        options.add_argument(arg)
    service = Service(executable_path=os.environ.get("VISION_CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def until(driver: WebDriver, what: str, pred: Callable[[WebDriver], R], timeout: float = T) -> R:
    wait = WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException])
    result: R = wait.until(pred, message=what)
    return result


def job(world: World, name: str, annotations: dict[str, str], **spec: object) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VisionJob",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"algorithm": world.algorithm, "queue": world.queue, **spec},
    }


def burst(world: World) -> list[dict[str, Any]]:
    """260 short jobs (every tenth fails, the others succeed with RESULT)
    and 40 that run for an hour."""
    jobs = []
    for i in range(SHORT):
        if i % 10 == 9:
            jobs.append(
                job(world, f"burst-{i:03d}", {SIM_OUTCOME: "fail", SIM_MESSAGE: "weights not found"}, retries=0)
            )
        else:
            jobs.append(job(world, f"burst-{i:03d}", {SIM_MESSAGE: json.dumps(RESULT)}))
    jobs += [job(world, f"long-{i:02d}", {SIM_DURATION: "1h"}) for i in range(LONG)]
    return jobs


def api_jobs(world: World, namespace: str | None = None) -> list[dict[str, Any]]:
    if namespace is None:
        listed: Any = world.custom.list_cluster_custom_object(GROUP, VERSION, "visionjobs")
    else:
        listed = world.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "visionjobs")
    items: list[dict[str, Any]] = listed["items"]
    return items


def phase(j: dict[str, Any]) -> str:
    return str((j.get("status") or {}).get("phase") or "Pending")


def waiting(j: dict[str, Any]) -> bool:
    return (
        phase(j) in ("Pending", "Queued")
        and not j["spec"].get("suspend")
        and not j["metadata"].get("deletionTimestamp")
    )


#: What the overview shows, read in one go (the page re-renders its tables
#: as summaries arrive, so element by element reads could straddle two).
SNAPSHOT_JS = """
const all = (sel, root) => Array.from((root || document).querySelectorAll(sel));
const num = (e) => (e ? Number(e.dataset.value) : null);
const cell = (r, id) => r.querySelector('[data-testid="' + id + '"]');
const range = document.getElementById("jobs-range");
return {
  phases: Object.fromEntries(all("[data-phase].phase").map((e) => [e.dataset.phase, Number(e.dataset.value)])),
  queues: Object.fromEntries(all('[data-testid="queue-row"]').map((r) => [r.dataset.queue, {
    slots: num(cell(r, "queue-slots")),
    waiting: num(cell(r, "queue-waiting")),
    gpus: num(cell(r, "queue-gpus")),
    reasons: Object.fromEntries(all('[data-testid="queue-reasons"] .chip', r)
      .map((c) => [c.dataset.testid.slice("reason-".length), Number(c.dataset.value)])),
    slots_text: cell(r, "queue-slots").textContent,
    head: cell(r, "queue-head").dataset.head,
    head_reason: (cell(r, "head-reason") || {}).textContent || null,
    head_text: cell(r, "queue-head").textContent,
  }])),
  algorithms: Object.fromEntries(all('[data-testid="algorithm-row"]').map((r) => [r.dataset.algorithm, {
    running: num(cell(r, "algorithm-running")),
    failed: num(cell(r, "algorithm-failed")),
    breaker: cell(r, "algorithm-breaker").textContent,
  }])),
  chart_finished: Number(document.getElementById("chart-throughput").dataset.total || -1),
  rows: all('[data-testid="job-row"]').map((r) => [r.dataset.name, r.dataset.phase]),
  total: range.dataset.total === undefined ? -1 : Number(range.dataset.total),
  range: range.textContent,
};
"""


def snapshot(driver: WebDriver) -> dict[str, Any]:
    got: dict[str, Any] = driver.execute_script(SNAPSHOT_JS)
    return got


def page_phase_counts(driver: WebDriver) -> dict[str, int]:
    phases: dict[str, int] = snapshot(driver)["phases"]
    return phases


def api_phase_counts(jobs: list[dict[str, Any]]) -> dict[str, int]:
    return {p: sum(1 for j in jobs if phase(j) == p) for p in PHASES}


def page_queue(driver: WebDriver, queue: str) -> dict[str, Any]:
    """The queue's counts on the page (None when it has no row)."""
    row = snapshot(driver)["queues"].get(queue)
    return {k: row[k] for k in ("slots", "waiting", "gpus", "reasons", "slots_text")} if row else {}


def api_queue(world: World, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [j for j in jobs if j["spec"]["queue"] == world.queue]
    holding = [j for j in mine if phase(j) in ("Admitted", "Running")]
    waits = [j for j in mine if waiting(j)]
    return {
        "slots": len(holding),
        "waiting": len(waits),
        "gpus": sum(int((j.get("status") or {}).get("gpus") or 0) for j in holding),
        "reasons": dict(Counter(str((j.get("status") or {}).get("reason") or "NotSeenYet") for j in waits)),
        "slots_text": f"{len(holding)}/{SLOTS}",
    }


def settled(world: World) -> bool:
    """The burst's short jobs are final; SLOTS long ones run and the rest wait."""
    counts = Counter(phase(j) for j in api_jobs(world, world.namespace))
    return counts == Counter(
        {"Succeeded": SHORT - SHORT // 10, "Failed": SHORT // 10, "Running": SLOTS, "Queued": LONG - SLOTS}
    )


def test_the_page_shows_the_pool_as_the_api_server_does(world: World, ui: Ui, browser: WebDriver) -> None:
    browser.get(ui.url)
    until(
        browser,
        "the page's watches synced",
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-synced") == "true",
    )

    # The burst, while the page is open; a screenshot in the middle of it.
    with ThreadPoolExecutor(8) as pool:
        created = list(
            pool.map(
                lambda body: world.custom.create_namespaced_custom_object(
                    GROUP, VERSION, world.namespace, "visionjobs", body
                ),
                burst(world),
            )
        )
    assert len(created) == SHORT + LONG
    until(browser, "jobs running on the page", lambda d: page_queue(d, world.queue)["slots"] == SLOTS, 60)
    shot(browser, "01-burst")

    assert wait_for(T, lambda: settled(world)), Counter(phase(j) for j in api_jobs(world, world.namespace))

    # The page follows within a second or two: wait until it shows the
    # cluster's counts, then compare exactly (the failure names the difference).
    def same(d: WebDriver) -> bool:
        jobs = api_jobs(world)
        queue: Any = world.custom.get_cluster_custom_object(GROUP, VERSION, "visionqueues", world.queue)
        shown = snapshot(d)["queues"].get(world.queue) or {}
        return (
            page_phase_counts(d) == api_phase_counts(jobs)
            and page_queue(d, world.queue) == api_queue(world, jobs)
            # The queue's status (its head) is written at most once a second.
            and shown.get("head") == (queue.get("status") or {}).get("head")
            and shown.get("head_reason") == "SlotsFull"
        )

    try:
        until(browser, "the page's counts equal the cluster's", same, 30)
    except Exception:
        shot(browser, "02-mismatch")
        raise
    jobs = api_jobs(world)
    assert page_phase_counts(browser) == api_phase_counts(jobs)
    assert (
        page_queue(browser, world.queue)
        == api_queue(world, jobs)
        == {
            "slots": SLOTS,
            "waiting": LONG - SLOTS,
            "gpus": SLOTS,
            "reasons": {"SlotsFull": LONG - SLOTS},
            "slots_text": f"{SLOTS}/{SLOTS}",
        }
    )
    seen = snapshot(browser)
    assert seen["algorithms"][world.algorithm] == {"running": SLOTS, "failed": SHORT // 10, "breaker": "none"}
    # The throughput chart counted the burst's finishes (all in the last ten minutes).
    assert seen["chart_finished"] >= SHORT
    # The head of the queue is the operator's (the queue's status), with its job's reason.
    queue: Any = world.custom.get_cluster_custom_object(GROUP, VERSION, "visionqueues", world.queue)
    head = seen["queues"][world.queue]
    assert head["head"] == queue["status"]["head"]
    assert head["head"].startswith(f"{world.namespace}/long-")
    assert head["head_reason"] == "SlotsFull"
    assert queue["status"]["headReason"] in head["head_text"]
    shot(browser, "02-settled")


def rows(driver: WebDriver) -> list[tuple[str, str]]:
    return [(n, p) for n, p in snapshot(driver)["rows"]]


def list_total(driver: WebDriver) -> int:
    total: int = snapshot(driver)["total"]
    return total


def test_a_phase_filter_and_a_name_search_show_only_those_jobs(world: World, ui: Ui, browser: WebDriver) -> None:
    browser.get(ui.url)
    until(browser, "synced", lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-synced") == "true")
    until(
        browser,
        "the namespace among the filters",
        lambda d: (
            world.namespace
            in [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "#f-namespace option")]
        ),
    )
    Select(browser.find_element(By.ID, "f-namespace")).select_by_value(world.namespace)
    Select(browser.find_element(By.ID, "f-phase")).select_by_value("Failed")
    expected = sorted(str(j["metadata"]["name"]) for j in api_jobs(world, world.namespace) if phase(j) == "Failed")
    until(browser, "the Failed jobs listed", lambda d: list_total(d) == len(expected) and len(rows(d)) == len(expected))
    assert rows(browser) == [(n, "Failed") for n in expected]
    assert expected == [f"burst-{i:03d}" for i in range(9, SHORT, 10)]
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "jobs"))
    shot(browser, "03-filter-failed")

    # A name search with paging: 50 a page, 260 burst jobs in all phases.
    Select(browser.find_element(By.ID, "f-phase")).select_by_value("")
    search = browser.find_element(By.ID, "f-q")
    search.send_keys("burst-")
    until(browser, "the search's first page", lambda d: list_total(d) == SHORT and len(rows(d)) == 50)
    assert [n for n, _ in rows(browser)] == [f"burst-{i:03d}" for i in range(50)]
    browser.find_element(By.ID, "next").click()
    until(browser, "the second page", lambda d: rows(d)[:1] == [("burst-050", "Succeeded")])
    assert [n for n, _ in rows(browser)] == [f"burst-{i:03d}" for i in range(50, 100)]
    assert snapshot(browser)["range"] == f"51\u2013100 of {SHORT}"  # an en dash


def open_job(driver: WebDriver, ui: Ui, namespace: str, name: str) -> None:
    """Opens a job's page and waits until it has loaded."""
    driver.get(f"{ui.url}#/job/{namespace}/{name}")
    loaded = f"{namespace}/{name}"
    until(
        driver,
        f"{loaded}'s page",
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-detail-loaded") == loaded,
        30,
    )


def test_a_jobs_page_shows_its_status_result_conditions_events_and_log(
    world: World, ui: Ui, browser: WebDriver
) -> None:
    for name, want_phase in (("burst-019", "Failed"), ("burst-020", "Succeeded")):
        open_job(browser, ui, world.namespace, name)
        obj: Any = world.custom.get_namespaced_custom_object(GROUP, VERSION, world.namespace, "visionjobs", name)
        st = obj["status"]
        assert st["phase"] == want_phase

        def status(key: str) -> str:
            return str(browser.find_element(By.CSS_SELECTOR, f'[data-testid="status-{key}"]').text)

        assert (status("phase"), status("reason"), status("attempts")) == (
            st["phase"],
            st["reason"],
            str(st["attempts"]),
        )
        conditions = [
            tuple(td.text for td in r.find_elements(By.TAG_NAME, "td")[:3])
            for r in browser.find_elements(By.CSS_SELECTOR, '[data-testid="condition-row"]')
        ]
        assert conditions == [(c["type"], c["status"], c.get("reason", "")) for c in st["conditions"]]
        assert ("Finished", "True", want_phase) in conditions
        result_text = browser.find_element(By.ID, "d-result").text
        if want_phase == "Succeeded":
            assert json.loads(result_text) == st["result"] == RESULT
        events = k8s.CoreV1Api(world.client).list_namespaced_event(
            world.namespace, field_selector=f"involvedObject.uid={obj['metadata']['uid']}"
        )
        shown = sorted(
            str(r.get_attribute("data-reason"))
            for r in browser.find_elements(By.CSS_SELECTOR, '[data-testid="event-row"]')
        )
        assert shown == sorted(str(e.reason) for e in events.items)
        assert shown, "the operator records Events on its jobs"
        # The pod of a finished job may be gone; either its log or why not.
        log = browser.find_element(By.ID, "d-log")
        assert log.get_attribute("data-state") in ("text", "message") and log.text, log.text
        shot(browser, f"04-job-{want_phase.lower()}")


def test_the_page_escapes_what_the_cluster_says(world: World, ui: Ui, browser: WebDriver) -> None:
    """A job's message is shown as text, never as markup."""
    name = "markup"
    body = job(
        world,
        name,
        {SIM_OUTCOME: "fail", SIM_MESSAGE: "<img src=x onerror=alert(1)><b>bold</b>"},
        retries=0,
        priority=100,
    )
    world.custom.create_namespaced_custom_object(GROUP, VERSION, world.namespace, "visionjobs", body)
    # It goes first (priority 100) into the slot a long job leaves.
    running = sorted(str(j["metadata"]["name"]) for j in api_jobs(world, world.namespace) if phase(j) == "Running")
    world.custom.delete_namespaced_custom_object(GROUP, VERSION, world.namespace, "visionjobs", running[0])

    def failed() -> bool:
        got: Any = world.custom.get_namespaced_custom_object(GROUP, VERSION, world.namespace, "visionjobs", name)
        return phase(got) == "Failed"

    assert wait_for(T, failed)
    open_job(browser, ui, world.namespace, name)
    assert browser.find_elements(By.CSS_SELECTOR, "#detail img, #detail b") == []
    message = browser.find_element(By.CSS_SELECTOR, '[data-testid="status-message"]').text
    assert "<img src=x onerror=alert(1)><b>bold</b>" in message, message


def namespace_user_kubeconfig(world: World) -> Path:
    """A kubeconfig of ServiceAccount ``viewer`` of the world's namespace, which
    may read VisionJobs, pods and Events there (not pods/log) and nothing of
    the cluster: not the queues, not the algorithms, not other namespaces."""
    ns = world.namespace
    core = k8s.CoreV1Api(world.client)
    rbac = k8s.RbacAuthorizationV1Api(world.client)
    meta = k8s.V1ObjectMeta
    core.create_namespaced_service_account(ns, k8s.V1ServiceAccount(metadata=meta(name="viewer")))
    read = ["get", "list", "watch"]
    rules = [
        k8s.V1PolicyRule(api_groups=[GROUP], resources=["visionjobs"], verbs=read),
        k8s.V1PolicyRule(api_groups=[""], resources=["pods", "events"], verbs=read),
    ]
    rbac.create_namespaced_role(ns, k8s.V1Role(metadata=meta(name="vision-viewer"), rules=rules))
    rbac.create_namespaced_role_binding(
        ns,
        k8s.V1RoleBinding(
            metadata=meta(name="vision-viewer"),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="vision-viewer"),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name="viewer", namespace=ns)],
        ),
    )
    request = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    created = core.create_namespaced_service_account_token("viewer", ns, request)
    assert created.status is not None
    token = str(created.status.token)
    admin = yaml.safe_load(kubeconfig_path().read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "viewer", "user": {"token": token}}],
        "contexts": [{"name": "viewer", "context": {"cluster": cluster["name"], "user": "viewer", "namespace": ns}}],
        "current-context": "viewer",
    }
    path = REPO / ".local" / "artifacts" / "browser" / f"kubeconfig-{ns}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def test_a_namespace_user_sees_their_namespace_and_why(world: World, browser: WebDriver) -> None:
    """Who may not list VisionJobs in all namespaces sees their namespace's,
    told so; the queues and algorithms they may not read, and a log they may
    not read, are said to be forbidden rather than shown as empty."""
    kubeconfig = namespace_user_kubeconfig(world)
    ui = Ui(kubeconfig, log="visionctl-ui-viewer")
    try:
        browser.get(ui.url)
        until(browser, "synced", lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-synced") == "true")
        note = browser.find_element(By.ID, "note")
        assert note.is_displayed()
        assert f"showing only namespace {world.namespace}'s jobs" in note.text, note.text
        errors = browser.find_element(By.ID, "errors").text
        assert "watch of VisionQueues: forbidden" in errors, errors
        assert "watch of VisionAlgorithms: forbidden" in errors, errors
        mine = api_jobs(world, world.namespace)
        until(browser, "the namespace's counts", lambda d: page_phase_counts(d) == api_phase_counts(mine), 30)
        assert page_phase_counts(browser) == api_phase_counts(api_jobs(world, world.namespace))
        shot(browser, "05-namespace-user")

        # A job with a pod (the burst's, or one made here when this test runs alone).
        with_pod = [j for j in api_jobs(world, world.namespace) if (j.get("status") or {}).get("podName")]
        if not with_pod:
            world.custom.create_namespaced_custom_object(
                GROUP, VERSION, world.namespace, "visionjobs", job(world, "viewer-job", {})
            )

            def has_pod() -> bool:
                got: Any = world.custom.get_namespaced_custom_object(
                    GROUP, VERSION, world.namespace, "visionjobs", "viewer-job"
                )
                return bool((got.get("status") or {}).get("podName"))

            assert wait_for(T, has_pod)
        name = str(with_pod[0]["metadata"]["name"]) if with_pod else "viewer-job"
        open_job(browser, ui, world.namespace, name)
        log = browser.find_element(By.ID, "d-log")
        assert log.get_attribute("data-state") == "message"
        assert "forbidden" in log.text or "is gone" in log.text, log.text
    finally:
        ui.stop()
        kubeconfig.unlink()  # it holds a token (of a ServiceAccount deleted with the namespace)
