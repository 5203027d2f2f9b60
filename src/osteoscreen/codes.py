"""The one module of coded concepts: DICOM (DCM), SNOMED CT (SCT), UCUM and our private codes.

Codes that ``pydicom.sr.codedict`` has are taken from it (so their meanings match the DICOM
standard's tables exactly); codes it lacks are named constants here, each with its source.
Nothing else in the package writes a code value as a literal.

Private codes use the coding scheme designator ``99OSTEO`` (DICOM PS3.16 Section 8: private
designators start with "99"). They stand where neither DICOM, SNOMED CT nor LOINC offers a
concept that we could verify; replace them when a standard code is adopted.
"""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from osteoscreen.labels import VERTEBRAE, id_to_name

__all__ = [
    "ALGORITHM_FAMILY",
    "ATTENUATION_COEFFICIENT",
    "BMD_CATEGORY",
    "BMD_CATEGORY_AGREEMENT",
    "CLASSIFIER_BMD_CATEGORY",
    "COMPUTED_TOMOGRAPHY",
    "CT_BONE_DENSITOMETRY",
    "IMAGING_MEASUREMENT_REPORT",
    "INCLUDED_IN_PATIENT_RESULT",
    "MEAN",
    "MEDIAN",
    "NO",
    "NORMAL",
    "OSTEOPENIA",
    "OSTEOPOROSIS",
    "PRIVATE_SCHEME",
    "PRIVATE_SCHEME_NAME",
    "PRIVATE_SCHEME_VERSION",
    "SEG_CATEGORY",
    "SEG_TYPE",
    "SPINE",
    "STANDARD_DEVIATION",
    "TRABECULAR_ROI_METHOD",
    "UNIT_CM3",
    "UNIT_HU",
    "UNIT_MG_PER_CM3",
    "VERTEBRA",
    "VOLUME",
    "VOLUMETRIC_BMD",
    "YES",
    "category_code",
    "category_from_code",
    "finding_site_code",
]

#: Coding scheme designator of our private codes.
PRIVATE_SCHEME = "99OSTEO"
PRIVATE_SCHEME_NAME = "osteoscreen private codes"
PRIVATE_SCHEME_VERSION = "1"


def _private(value: str, meaning: str) -> Code:
    return Code(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


# --- Anatomy -------------------------------------------------------------------------------
#: Segmented property category / type of a vertebral-body segment (CID 7150 / CID 7151:
#: Tissue / Bone); the level is carried by the segment's anatomic region.
SEG_CATEGORY: Code = codes.SCT.Tissue  # 85756007
SEG_TYPE: Code = codes.SCT.Bone  # 272673000
#: SCT 421060004 "Spine" (structure of vertebral column): the patient-level finding site.
SPINE: Code = codes.SCT.Spine
#: SCT 51282000 "Vertebra": the finding site of a level without its own SNOMED code
#: (L6, a transitional vertebra, and bodies whose level could not be determined).
VERTEBRA: Code = codes.SCT.Vertebra

_LEVEL_CODES: dict[str, Code] = {
    **{f"C{n}": getattr(codes.SCT, f"C{n}Vertebra") for n in range(1, 8)},
    **{f"T{n}": getattr(codes.SCT, f"T{n}Vertebra") for n in range(1, 13)},
    **{f"L{n}": getattr(codes.SCT, f"L{n}Vertebra") for n in range(1, 6)},
    # S1 is the sacrum's first segment; VerSe's label 26 covers the whole sacrum.
    "S1": codes.SCT.Sacrum,  # 54735007
}

# --- Findings ------------------------------------------------------------------------------
#: SNOMED CT 64859006 "Osteoporosis (disorder)" -- not in pydicom's codedict.
OSTEOPOROSIS = Code(value="64859006", scheme_designator="SCT", meaning="Osteoporosis")
#: SNOMED CT 312894000 "Osteopenia (finding)" -- not in pydicom's codedict.
OSTEOPENIA = Code(value="312894000", scheme_designator="SCT", meaning="Osteopenia")
#: SCT 17621005 "Normal".
NORMAL: Code = codes.SCT.Normal
YES: Code = codes.SCT.Yes  # 373066001
NO: Code = codes.SCT.No  # 373067005

_CATEGORY_CODES: dict[str, Code] = {
    "normal": NORMAL,
    "osteopenia": OSTEOPENIA,
    "osteoporosis": OSTEOPOROSIS,
}

# --- Measurements (TID 300 concept names, derivations and UCUM units) -----------------------
#: DCM 112031 "Attenuation Coefficient" (CID 218 / CID 7180): CT numbers, with a derivation.
ATTENUATION_COEFFICIENT: Code = codes.DCM.AttenuationCoefficient
MEAN: Code = codes.SCT.Mean  # 373098007
MEDIAN: Code = codes.SCT.Median  # 373099004
STANDARD_DEVIATION: Code = codes.SCT.StandardDeviation  # 386136009
#: SCT 118565006 "Volume" (of the trabecular ROI).
VOLUME: Code = codes.SCT.Volume
UNIT_HU: Code = codes.UCUM.HounsfieldUnit  # [hnsf'U]
UNIT_MG_PER_CM3: Code = codes.UCUM.MilligramsPerCubicCentimeter  # mg/cm3
#: UCUM cm3 (= ml): the ROI volume.
UNIT_CM3: Code = codes.UCUM.CubicCentimeter

#: Volumetric (QCT-equivalent) bone mineral density of trabecular bone, mg/cm3. Private:
#: the LOINC / SNOMED bone-density concepts we could verify are areal (DXA, g/cm2).
VOLUMETRIC_BMD = _private("BMD-VOL", "Volumetric bone mineral density")
#: Category of a BMD value by the ACR / ISCD QCT thresholds (values: NORMAL, OSTEOPENIA,
#: OSTEOPOROSIS). Private: no standard concept name for the QCT category exists.
BMD_CATEGORY = _private("BMD-CAT", "Bone mineral density category")
#: The same category as predicted by the three-class classifier (second opinion).
CLASSIFIER_BMD_CATEGORY = _private("BMD-CAT-CLS", "Bone mineral density category by classifier")
#: Whether the classifier's category agrees with the regressed BMD's category (YES / NO).
BMD_CATEGORY_AGREEMENT = _private("BMD-CAT-AGREE", "Classifier agrees with BMD category")
#: Whether a vertebra counted for the patient-level value (YES / NO).
INCLUDED_IN_PATIENT_RESULT = _private("LEVEL-USED", "Included in patient result")
#: Measurement method: trabecular ROI by 3 mm erosion of the vertebral body.
TRABECULAR_ROI_METHOD = _private("TRAB-ROI", "Trabecular ROI by erosion of vertebral body")

# --- Procedures, report and algorithms ------------------------------------------------------
COMPUTED_TOMOGRAPHY: Code = codes.SCT.ComputedTomography  # 77477000
#: Opportunistic CT bone densitometry (procedure reported). Private: SNOMED's "bone
#: densitometry" procedures could not be verified here.
CT_BONE_DENSITOMETRY = _private("CT-BMD", "Opportunistic CT bone densitometry")
#: DCM 123110 "Artificial Intelligence": the family of the segmentation and BMD models.
ALGORITHM_FAMILY: Code = codes.DCM.ArtificialIntelligence
#: DCM 126000 "Imaging Measurement Report": the SR document title.
IMAGING_MEASUREMENT_REPORT: Code = codes.DCM.ImagingMeasurementReport


def finding_site_code(label: int | str) -> Code:
    """The SNOMED CT code of a vertebra, for finding sites and segment anatomic regions.

    Args:
        label: a label id from :mod:`osteoscreen.labels` (20) or a level name ("L1").

    Returns:
        The level's own code (e.g. SCT 66794005 "L1 vertebra"); S1 maps to the sacrum; L6
        and unknown levels (V1, V2, ...) fall back to SCT 51282000 "Vertebra".

    Raises:
        TypeError: if ``label`` is neither an int nor a str.
        ValueError: if ``label`` is not a vertebra.
    """
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        raise TypeError(f"label must be an int label id or a level name, got {type(label).__name__}")
    if isinstance(label, int):
        name = id_to_name(label)
    else:
        name = label.strip().upper()
        known = {v.name for v in VERTEBRAE.values()}
        is_unknown_level = name.startswith("V") and name[1:].isdigit() and int(name[1:]) > 0
        if name not in known and not is_unknown_level:
            raise ValueError(f"label {label!r} is not a vertebra name (C1-C7, T1-T12, L1-L6, S1, V1...)")
    return _LEVEL_CODES.get(name, VERTEBRA)


def category_code(category: str) -> Code:
    """The SNOMED CT code of a BMD category ("normal", "osteopenia", "osteoporosis").

    Raises:
        ValueError: for any other category.
    """
    try:
        return _CATEGORY_CODES[category]
    except KeyError:
        raise ValueError(f"category must be one of {sorted(_CATEGORY_CODES)}, got {category!r}") from None


def category_from_code(code: Code) -> str:
    """Inverse of :func:`category_code` (compares scheme and value only).

    Raises:
        ValueError: if the code is not one of the three category codes.
    """
    for name, c in _CATEGORY_CODES.items():
        if c.value == code.value and c.scheme_designator == code.scheme_designator:
            return name
    raise ValueError(f"code {code.value} ({code.scheme_designator}) is not a BMD category code")
