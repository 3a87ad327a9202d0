"""Label names as an XML label table in the NIfTI header, the form NORA and HCP Workbench read.

The table is a Caret extension (NIfTI extension code 30, ``NIFTI_ECODE_CARET``) holding

    <CaretExtension><VolumeInformation Index="0"><LabelTable>
      <Label Key="1" Red=".." Green=".." Blue=".." Alpha="1">lesion</Label> ...
    </LabelTable><VolumeType>Label</VolumeType></VolumeInformation></CaretExtension>

(the layout Workbench writes for a label volume, which the authors' patchwork writes too), with key 0 the
unlabelled background and a colour per label spread around the hue circle by the golden ratio. An atlas
(one map of label values) is also marked with the NIfTI intent ``label`` (1002). The JSON comment that
:func:`patchwork.io.save_image` writes stays beside it for :func:`patchwork.io.read_label_names`.

Example::

    add_label_table("atlas.nii.gz", {3: "lesion", 7: "oedema"}, atlas=True)
    read_label_table("atlas.nii.gz")  # {0: '???', 3: 'lesion', 7: 'oedema'}
"""

from __future__ import annotations

import colorsys
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping

import nibabel as nib

from patchwork.io import atomic_path, load_nifti

NIFTI_ECODE_CARET = 30
NIFTI_INTENT_LABEL = "label"
GOLDEN = 0.6180339887498949


def label_table_xml(label_names: Mapping[int, str]) -> bytes:
    """The Caret XML label table (module docstring) of label value -> name."""
    root = ET.Element("CaretExtension", Version="1.0")
    volume = ET.SubElement(root, "VolumeInformation", Index="0")
    table = ET.SubElement(volume, "LabelTable")
    background = ET.SubElement(table, "Label", Key="0", Red="0", Green="0", Blue="0", Alpha="0")
    background.text = "???"
    for key, name in sorted(label_names.items()):
        red, green, blue = colorsys.hsv_to_rgb((int(key) * GOLDEN) % 1.0, 0.7, 0.95)
        colour = {"Red": f"{red:.4f}", "Green": f"{green:.4f}", "Blue": f"{blue:.4f}", "Alpha": "1"}
        ET.SubElement(table, "Label", Key=str(int(key)), **colour).text = str(name)
    ET.SubElement(volume, "VolumeType").text = "Label"
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def add_label_table(path: str | os.PathLike[str], label_names: Mapping[int, str], atlas: bool) -> None:
    """Add the label table of ``label_names`` to the NIfTI file ``path`` (rewritten atomically); an
    ``atlas`` also gets the intent ``label``."""
    image = load_nifti(path)
    header = image.header.copy()
    header.extensions.append(nib.nifti1.Nifti1Extension(NIFTI_ECODE_CARET, label_table_xml(label_names)))
    if atlas:
        header.set_intent(NIFTI_INTENT_LABEL)
    out = nib.Nifti1Image(image.dataobj, image.affine, header)
    with atomic_path(path) as tmp:
        nib.save(out, str(tmp))


def read_label_table(path: str | os.PathLike[str]) -> dict[int, str] | None:
    """Label value -> name of the first Caret label table in ``path``'s header, or ``None``."""
    for extension in load_nifti(path).header.extensions:
        if extension.get_code() != NIFTI_ECODE_CARET:
            continue
        # nibabel >= 5.3 holds the raw bytes in ``content`` (``get_content`` decodes known codes only)
        raw = extension.content if hasattr(extension, "content") else extension.get_content()
        try:
            root = ET.fromstring(bytes(raw).rstrip(b"\x00"))
        except ET.ParseError:
            continue
        labels = root.findall("./VolumeInformation/LabelTable/Label")
        if labels:
            return {int(label.get("Key", "0")): label.text or "" for label in labels}
    return None
