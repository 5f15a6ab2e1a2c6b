"""De-identification of the DICOM objects medad writes: PS3.15 Annex E Basic Application Level
Confidentiality Profile, with the Clean Descriptors option.

Applied to SEG / Parametric Map objects, which copy the Patient and Study modules of their source images.
Within one :class:`Deidentifier` every UID is remapped consistently (same input UID, same new UID), so the
SEG, the fractional SEG and the Parametric Map of one study still reference each other's study, series and
frame of reference. Patient name and id become one pseudonym; dates and times become fixed dummies (or are
emptied where the attribute may be empty); private tags and identifying attributes of patients, personnel
and institutions are removed. Descriptors medad writes itself (series / content description, segment
labels) hold no identifiers and are kept, which is the Clean Descriptors option.
"""

from __future__ import annotations

import hashlib
import secrets

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import medad

METHOD = f"PS3.15 E.1.1 Basic Application Level Confidentiality Profile + Clean Descriptors (medad {medad.__version__})"

REMOVE = frozenset(
    {
        "AcquisitionComments",
        "AdditionalPatientHistory",
        "AdmissionID",
        "AdmittingDiagnosesDescription",
        "Allergies",
        "BranchOfService",
        "CountryOfResidence",
        "CurrentPatientLocation",
        "EthnicGroup",
        "FrameComments",
        "ImageComments",
        "InstitutionAddress",
        "InstitutionCodeSequence",
        "InstitutionName",
        "InstitutionalDepartmentName",
        "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence",
        "MedicalAlerts",
        "MedicalRecordLocator",
        "MilitaryRank",
        "NameOfPhysiciansReadingStudy",
        "Occupation",
        "OperatorsName",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientAddress",
        "PatientAge",
        "PatientBirthName",
        "PatientBirthTime",
        "PatientComments",
        "PatientInsurancePlanCodeSequence",
        "PatientMotherBirthName",
        "PatientReligiousPreference",
        "PatientSize",
        "PatientState",
        "PatientTelephoneNumbers",
        "PatientWeight",
        "PerformedProcedureStepDescription",
        "PerformedProcedureStepID",
        "PerformingPhysicianName",
        "PerformingPhysicianIdentificationSequence",
        "PhysiciansOfRecord",
        "PhysiciansOfRecordIdentificationSequence",
        "PhysiciansReadingStudyIdentificationSequence",
        "ReferencedPatientSequence",
        "ReferencedStudySequence",
        "ReferencedPerformedProcedureStepSequence",
        "ReferringPhysicianAddress",
        "ReferringPhysicianIdentificationSequence",
        "ReferringPhysicianTelephoneNumbers",
        "RegionOfResidence",
        "RequestAttributesSequence",
        "RequestingPhysician",
        "RequestingService",
        "ResponsibleOrganization",
        "ResponsiblePerson",
        "SmokingStatus",
        "SpecialNeeds",
        "StationName",
        "StudyDescription",
        "AdmittingDate",
        "AdmittingTime",
        "PatientSexNeutered",
        "PregnancyStatus",
        "LastMenstrualDate",
        "ProtocolName",
        "PerformedLocation",
        "ScheduledPerformingPhysicianName",
        "OperatorIdentificationSequence",
        "PersonName",
        "PersonAddress",
        "PersonTelephoneNumbers",
        "InstitutionalDepartmentTypeCodeSequence",
        "DataSetTrailingPadding",
        "DigitalSignaturesSequence",
    }
)
EMPTY = frozenset(
    {
        "AccessionNumber",
        "AcquisitionContextSequence",
        "StudyID",
        "ReferringPhysicianName",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "ContentCreatorName",
        "Laterality",
    }
)
UID_KEYWORDS = frozenset(
    {
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "MediaStorageSOPInstanceUID",
        "ReferencedSOPInstanceUID",
        "FrameOfReferenceUID",
        "ReferencedFrameOfReferenceUID",
        "RelatedFrameOfReferenceUID",
        "SynchronizationFrameOfReferenceUID",
        "SourceFrameOfReferenceUID",
        "DimensionOrganizationUID",
        "ConcatenationUID",
        "TrackingUID",
        "UID",
        "IrradiationEventUID",
        "DeviceUID",
        "StorageMediaFileSetUID",
        "TransactionUID",
        "TargetUID",
        "FiducialUID",
        "InstanceCreatorUID",
        "CreatorVersionUID",
        "SpecimenUID",
        "RequestedSOPInstanceUID",
        "ReferencedGeneralPurposeScheduledProcedureStepTransactionUID",
    }
)
DUMMY = {"DA": "19000101", "TM": "000000", "DT": "19000101000000"}


class Deidentifier:
    """Apply the Basic Application Level Confidentiality Profile with consistent pseudonyms.

    Args:
        salt: secret mixed into UID and patient pseudonyms. Reuse one salt to keep pseudonyms stable across
            exports (keep it outside the export); by default a fresh random salt is used, so nothing in the
            output can be linked back by recomputing hashes.
    """

    def __init__(self, salt: str | None = None) -> None:
        self._salt = salt if salt is not None else secrets.token_hex(16)
        self._uids: dict[str, str] = {}

    def _hash(self, kind: str, value: str) -> str:
        return hashlib.sha256(f"{self._salt}\x00{kind}\x00{value}".encode()).hexdigest()

    def uid(self, value: str) -> str:
        """Return the consistent replacement of a UID (a ``2.25.`` UUID-derived UID)."""
        if value not in self._uids:
            self._uids[value] = "2.25." + str(int(self._hash("uid", value)[:32], 16))
        return self._uids[value]

    def pseudonym(self, patient_id: str) -> str:
        """Return the patient pseudonym used as PatientID (and, with a trailing ``^``, as PatientName)."""
        return "ANON-" + self._hash("patient", patient_id)[:10].upper()

    def _element(self, ds: Dataset, elem: DataElement) -> None:
        keyword = elem.keyword
        if elem.tag.is_private or keyword in REMOVE:
            del ds[elem.tag]
        elif keyword in EMPTY:
            elem.value = ""
        elif keyword in UID_KEYWORDS and elem.VR == "UI" and elem.value:
            elem.value = [self.uid(str(v)) for v in elem.value] if elem.VM > 1 else self.uid(str(elem.value))
        elif elem.VR in DUMMY and elem.value:
            elem.value = DUMMY[elem.VR]

    def apply(self, ds: Dataset) -> Dataset:
        """De-identify ``ds`` in place (file meta included) and return it."""
        patient = str(ds.get("PatientID", "") or ds.get("PatientName", "") or "")
        ds.walk(self._element)
        alias = self.pseudonym(patient)
        ds.PatientName = f"{alias}^"
        ds.PatientID = alias
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = METHOD[:64]
        codes = []
        for value, meaning in (
            ("113100", "Basic Application Confidentiality Profile"),
            ("113105", "Clean Descriptors Option"),
        ):
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            codes.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(codes)
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        if getattr(ds, "file_meta", None) is not None and "SOPInstanceUID" in ds:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return ds
