"""The Hugging Face image layout: the ``huggingface`` schema metadata and the schema that
image folders and ``.npz`` files are presented in (``image: struct<bytes, path>``, a label
column, class names as a ClassLabel feature)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

HF_METADATA_KEY = b"huggingface"
HF_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def hf_metadata(schema: pa.Schema) -> dict[str, Any] | None:
    """The ``huggingface`` schema metadata, its ``info.features`` an object; None when it is
    absent or malformed (see :func:`malformed_hf_metadata`)."""
    raw = (schema.metadata or {}).get(HF_METADATA_KEY)
    if raw is None:
        return None
    try:
        hf = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(hf, dict) or not isinstance(hf.setdefault("info", {}), dict):
        return None
    if not isinstance(hf["info"].setdefault("features", {}), dict):
        return None
    return hf


def malformed_hf_metadata(schema: pa.Schema) -> bool:
    """Whether the schema has ``huggingface`` metadata that is not the object ``datasets``
    writes (no JSON, or ``info.features`` not an object); it is then ignored."""
    return HF_METADATA_KEY in (schema.metadata or {}) and hf_metadata(schema) is None


def class_names_from_metadata(schema: pa.Schema, label_column: str) -> list[str] | None:
    """ClassLabel names from a schema's ``huggingface`` metadata, or None.

    The feature of ``label_column`` is used when it is a ClassLabel; otherwise the first
    ClassLabel feature, so a renamed label column still finds its names. Malformed
    metadata is ignored: class names are a convenience, not a requirement.
    """
    hf = hf_metadata(schema)
    if hf is None:
        return None
    features = hf["info"]["features"]
    candidates = [features.get(label_column)] + list(features.values())
    for feature in candidates:
        if (
            isinstance(feature, dict)
            and isinstance(feature.get("names"), list)
            and feature.get("_type", "ClassLabel") == "ClassLabel"
        ):
            return [str(name) for name in feature["names"]]
    return None


def hf_schema(
    image_column: str, label_column: str, label_type: pa.DataType, class_names: list[str] | None
) -> pa.Schema:
    """Schema in the Hugging Face image layout, with ``huggingface`` metadata."""
    if class_names is not None:
        label_feature: dict[str, Any] = {"names": list(class_names), "_type": "ClassLabel"}
    else:
        label_feature = {"dtype": str(label_type), "_type": "Value"}
    features = {image_column: {"_type": "Image"}, label_column: label_feature}
    metadata = {HF_METADATA_KEY: json.dumps({"info": {"features": features}}).encode()}
    return pa.schema([(image_column, HF_IMAGE_TYPE), (label_column, label_type)], metadata=metadata)
