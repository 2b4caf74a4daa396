"""The models against the CRD schema (crds/visionjobs.vision.zjlab.io.yaml):
a field added to, removed from or retyped in the CRD without the same change
here fails these tests."""

from __future__ import annotations

import copy
import types
import typing
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from vision_client import (
    API_VERSION,
    KIND,
    PLURAL,
    JobPhase,
    VisionJob,
    VisionJobSpec,
    VisionJobStatus,
)

CRD = Path(__file__).resolve().parents[3] / "crds" / "visionjobs.vision.zjlab.io.yaml"


def crd() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return document


def schema() -> dict[str, Any]:
    (version,) = [v for v in crd()["spec"]["versions"] if v["storage"]]
    root: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return root


def wire_names(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def field_by_wire_name(model: type[BaseModel], wire: str) -> FieldInfo:
    (field,) = [f for n, f in model.model_fields.items() if (f.alias or n) == wire]
    return field


def python_types(annotation: Any) -> set[Any]:
    """The types an annotation admits, None left out (`int | None` -> {int})."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return {t for arg in typing.get_args(annotation) for t in python_types(arg)}
    if annotation is type(None):
        return set()
    return {annotation}


#: Scalar CRD types (type, format) -> Python type.
SCALARS: dict[tuple[str | None, str | None], Any] = {
    ("integer", None): int,
    ("integer", "int32"): int,
    ("integer", "int64"): int,
    ("string", None): str,
    ("string", "date-time"): datetime,
    ("boolean", None): bool,
    # A free-form object or value (x-kubernetes-preserve-unknown-fields).
    ("object", None): dict,
    (None, None): Any,
}

#: CRD bound -> the attribute of pydantic's constraint (annotated_types).
BOUNDS = {"minimum": "ge", "maximum": "le", "minLength": "min_length", "maxLength": "max_length"}


def mismatches(model: type[BaseModel], node: dict[str, Any], path: str) -> list[str]:
    """Every way ``model`` differs from the schema ``node`` (an object with
    properties), nested models and lists of models included."""
    out = []
    props: dict[str, Any] = node["properties"]
    names = wire_names(model)
    out += [f"{path}.{n}: in the schema, not in {model.__name__}" for n in sorted(set(props) - names)]
    out += [f"{path}.{n}: in {model.__name__}, not in the schema" for n in sorted(names - set(props))]
    required = {f.alias or n for n, f in model.model_fields.items() if f.is_required()}
    if required != set(node.get("required", [])):
        out.append(f"{path}: required {sorted(required)}, the schema {sorted(node.get('required', []))}")
    for wire in sorted(set(props) & names):
        out += prop_mismatches(field_by_wire_name(model, wire), props[wire], f"{path}.{wire}")
    return out


def prop_mismatches(field: FieldInfo, prop: dict[str, Any], path: str) -> list[str]:
    got = python_types(field.annotation)
    (python,) = got if len(got) == 1 else (None,)
    if "properties" in prop:  # a structured object: a model of its own
        if not (isinstance(python, type) and issubclass(python, BaseModel)):
            return [f"{path}: {got}, the schema an object with properties"]
        return mismatches(python, prop, path)
    if prop.get("type") == "array":
        items = prop["items"]
        (item,) = typing.get_args(python) or (None,)
        if typing.get_origin(python) is not list or not (isinstance(item, type) and issubclass(item, BaseModel)):
            return [f"{path}: {got}, the schema an array of objects"]
        return mismatches(item, items, f"{path}[]")
    if "enum" in prop:
        if not (isinstance(python, type) and issubclass(python, Enum)):
            return [f"{path}: {got}, the schema an enum"]
        values = [e.value for e in python]
        return [] if values == prop["enum"] else [f"{path}: values {values}, the schema {prop['enum']}"]
    python = typing.get_origin(python) or python
    want = SCALARS[(prop.get("type"), prop.get("format"))]
    out = [] if python is want else [f"{path}: {got}, the schema {want}"]
    bounds = {key: getattr(m, attr) for m in field.metadata for key, attr in BOUNDS.items() if hasattr(m, attr)}
    want_bounds = {key: prop[key] for key in BOUNDS if key in prop}
    if bounds != want_bounds:
        out.append(f"{path}: bounds {bounds}, the schema {want_bounds}")
    if "default" in prop and field.default != prop["default"]:
        out.append(f"{path}: default {field.default!r}, the schema {prop['default']!r}")
    return out


@pytest.mark.parametrize(
    ("model", "field"),
    [pytest.param(VisionJobSpec, "spec", id="spec"), pytest.param(VisionJobStatus, "status", id="status")],
)
def test_the_models_are_exactly_the_schema(model: type[BaseModel], field: str) -> None:
    """Field names (camelCase), required fields, types, enums, bounds and
    defaults, nested objects and lists of objects included."""
    assert mismatches(model, schema()["properties"][field], field) == []


def test_the_check_sees_a_difference() -> None:
    """The comparison is not vacuous: a schema with a field more, one less,
    another type or bound fails it."""
    node = copy.deepcopy(schema()["properties"]["spec"])
    node["properties"]["newField"] = {"type": "string"}
    del node["properties"]["gpus"]
    node["properties"]["retries"]["maximum"] = 30
    node["properties"]["suspend"] = {"type": "integer"}
    node["properties"]["output"]["properties"]["persistentVolumeClaim"]["required"] = []
    assert mismatches(VisionJobSpec, node, "spec") == [
        "spec.newField: in the schema, not in VisionJobSpec",
        "spec.gpus: in VisionJobSpec, not in the schema",
        "spec.output.persistentVolumeClaim: required ['claimName'], the schema []",
        "spec.retries: bounds {'minimum': 0, 'maximum': 20}, the schema {'minimum': 0.0, 'maximum': 30}",
        "spec.suspend: {<class 'bool'>}, the schema <class 'int'>",
    ]


def test_the_final_phases() -> None:
    assert {p for p in JobPhase if p.is_final} == {JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.REJECTED}


def test_resource_names_match_the_crd() -> None:
    spec = crd()["spec"]
    versions = [v["name"] for v in spec["versions"] if v["served"]]
    assert f"{spec['group']}/{versions[0]}" == API_VERSION
    assert (spec["names"]["kind"], spec["names"]["plural"]) == (KIND, PLURAL)


def test_a_job_round_trips_through_its_camel_case_json() -> None:
    wire = {
        "apiVersion": "vision.zjlab.io/v1alpha1",
        "kind": "VisionJob",
        "metadata": {"name": "frame-1", "namespace": "team-a", "resourceVersion": "42", "managedFields": []},
        "spec": {
            "algorithm": "yolo-detect",
            "queue": "pool",
            "priority": 5,
            "input": {"uri": "s3://frames/1.jpg"},
            "timeoutSeconds": 60,
            "ttlSecondsAfterFinished": 30,
            "suspend": False,
            "output": {"persistentVolumeClaim": {"claimName": "results"}, "path": "cam42"},
        },
        "status": {
            "phase": "Succeeded",
            "reason": "Completed",
            "podName": "frame-1-1",
            "finishedAt": "2026-11-30T01:00:00Z",
            "result": {
                "objects": [],
                "outputs": [{"path": "faces.jpg", "size": 64544, "sha256": "e6b37af1", "mediaType": "image/jpeg"}],
            },
            "output": {"claimName": "results", "path": "cam42/1"},
            "conditions": [
                {
                    "type": "Finished",
                    "status": "True",
                    "reason": "Succeeded",
                    "message": "",
                    "lastTransitionTime": "2026-11-30T01:00:00Z",
                }
            ],
            "someFieldOfANewerOperator": 1,
        },
    }
    job = VisionJob.model_validate(wire)
    assert job.spec.timeout_seconds == 60
    assert job.phase is JobPhase.SUCCEEDED and job.is_finished
    assert job.result["objects"] == []
    (output,) = job.outputs
    assert (output.path, output.size, output.sha256) == ("faces.jpg", 64544, "e6b37af1")
    assert output.model_extra == {"mediaType": "image/jpeg"}
    assert job.condition("Finished") is not None
    assert job.metadata.resource_version == "42"
    assert job.spec.output is not None and job.spec.output.persistent_volume_claim.claim_name == "results"
    assert job.status is not None and job.status.output is not None and job.status.output.path == "cam42/1"
    back = job.to_dict()
    assert back["spec"] == wire["spec"]
    assert back["metadata"]["managedFields"] == []
    assert "someFieldOfANewerOperator" not in back["status"]


def test_a_spec_sends_only_what_is_set() -> None:
    spec = VisionJobSpec(algorithm="yolo-detect", timeout_seconds=60)
    assert spec.to_dict() == {
        "algorithm": "yolo-detect",
        "queue": "default",
        "priority": 0,
        "timeoutSeconds": 60,
        "suspend": False,
    }


def test_a_result_without_outputs_lists_none() -> None:
    results: list[Any] = [None, "text", {"objects": []}, {"outputs": "not a list"}]
    for result in results:
        job = VisionJob.model_validate({"spec": {"algorithm": "a"}, "status": {"result": result}})
        assert job.outputs == []
