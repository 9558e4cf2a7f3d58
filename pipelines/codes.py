"""Coded concepts used by the built-in pipelines (PS3.16 codes, one place).

Meanings are those of the DICOM Content Mapping Resource as shipped in
pydicom's concept dictionary (``pydicom.sr.codedict.codes``), checked by
``tests/pipelines/test_ct_anatomy.py``. Local concepts use the private
coding scheme ``99AINODE`` (PS3.3 8.2, private coding schemes start "99").
"""

from __future__ import annotations

from pipelines.findings import Code

LOCAL_SCHEME = "99AINODE"

# Segmented property categories (CID 7150).
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
TISSUE = Code("85756007", "SCT", "Tissue")

# Segmented property types (CID 7151 and related).
ENTIRE_BODY = Code("38266002", "SCT", "Entire body")
LUNG = Code("39607008", "SCT", "Lung")
BONE = Code("272673000", "SCT", "Bone")
SKULL = Code("89546000", "SCT", "Skull")
INTRACRANIAL = Code("1101003", "SCT", "Intracranial")
BRAIN = Code("12738006", "SCT", "Brain")

# Measurement concepts (TID 1419 / TID 300).
VOLUME = Code("118565006", "SCT", "Volume")
ATTENUATION_COEFFICIENT = Code("112031", "DCM", "Attenuation Coefficient")
MEAN = Code("373098007", "SCT", "Mean")
LAA950 = Code("LAA950", LOCAL_SCHEME, "Lung low attenuation area below -950 HU")

# Units (UCUM, CID 7181).
MILLILITER = Code("mL", "UCUM", "milliliter")
HOUNSFIELD_UNIT = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
PERCENT = Code("%", "UCUM", "Percent")
