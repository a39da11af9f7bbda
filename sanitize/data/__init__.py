"""Reading, validating and decoding training-set sources; layouts of the stage files."""

from sanitize.data.decode import decode_image, image_bytes, probe_image
from sanitize.data.read import ReadSummary, read_source
from sanitize.data.source import Source, class_names_from_metadata, open_source

__all__ = [
    "ReadSummary",
    "Source",
    "class_names_from_metadata",
    "decode_image",
    "image_bytes",
    "open_source",
    "probe_image",
    "read_source",
]
