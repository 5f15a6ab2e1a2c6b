"""De-identification of the DICOM objects medad writes: PS3.15 Annex E Basic Application Level
Confidentiality Profile, with the Clean Descriptors option.

Applied to SEG / Parametric Map objects, which copy the Patient and Study modules of their source images.
Within one :class:`Deidentifier` every UID is remapped consistently (same input UID, same new UID), so the
SEG, the fractional SEG and the Parametric Map of one study still reference each other's study, series and
frame of reference. Patient name and id become one pseudonym; dates and times become fixed dummies (or are
emptied where the attribute may be empty); private tags and identifying attributes of patients, personnel,
devices and institutions are removed, emptied or replaced by dummies. Descriptors medad writes itself
(series / content description, segment labels) hold no identifiers and are kept, which is the Clean
Descriptors option.

The rules apply at every depth (sequence items included, e.g. the Contributing Equipment Sequence that
highdicom fills from the source's General Equipment module), by keyword from the profile's table and, as a
safety net, by value representation: every person name other than the pseudonymous PatientName is emptied,
every age removed, every date / time set to a dummy, every UID that is not a well-known DICOM UID (SOP
class, transfer syntax, ...) remapped, and every root-level attribute of the source's Patient and Clinical
Trial modules not needed by the object removed.
"""

from __future__ import annotations

import hashlib
import secrets

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

import medad

#: DeidentificationMethod (an LO: at most 64 characters); the options are coded in
#: DeidentificationMethodCodeSequence (DCM 113100 Basic profile, 113105 Clean Descriptors option).
METHOD_TEXT = "PS3.15 Basic Application Level Confidentiality Profile"
#: The full description recorded in export.json.
METHOD = f"{METHOD_TEXT} with the Clean Descriptors option (medad {medad.__version__})"
OPTIONS = (("113100", "Basic Application Confidentiality Profile"), ("113105", "Clean Descriptors Option"))

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
        "AcquisitionDeviceProcessingDescription",
        "AcquisitionProtocolDescription",
        "ActualHumanPerformersSequence",
        "AddressTrial",
        "AdmittingDiagnosesCodeSequence",
        "AuthorObserverSequence",
        "CommentsOnThePerformedProcedureStep",
        "ConfidentialityConstraintOnPatientDataDescription",
        "ConsultingPhysicianIdentificationSequence",
        "ConsultingPhysicianName",
        "ContentSequence",
        "ContributionDescription",
        "CustodialOrganizationSequence",
        "DerivationDescription",
        "DetectorID",
        "DeviceDescription",
        "DeviceLabel",
        "DischargeDiagnosisDescription",
        "DistributionAddress",
        "DistributionName",
        "GantryID",
        "GeneratorID",
        "HumanPerformerName",
        "HumanPerformerOrganization",
        "IconImageSequence",
        "IdentifyingComments",
        "ImagePresentationComments",
        "ImagingServiceRequestComments",
        "Impressions",
        "InsurancePlanIdentification",
        "IntendedRecipientsOfResultsIdentificationSequence",
        "InterpretationApproverSequence",
        "InterpretationAuthor",
        "InterpretationDiagnosisDescription",
        "InterpretationIDIssuer",
        "InterpretationRecorder",
        "InterpretationText",
        "InterpretationTranscriber",
        "IssuerOfAccessionNumberSequence",
        "IssuerOfAdmissionIDSequence",
        "IssuerOfServiceEpisodeIDSequence",
        "MeasuredAPDimension",
        "MeasuredLateralDimension",
        "ModifiedAttributesSequence",
        "NamesOfIntendedRecipientsOfResults",
        "OrderCallbackPhoneNumber",
        "OrderEnteredBy",
        "OrderEntererLocation",
        "OriginalAttributesSequence",
        "OtherStudyNumbers",
        "ParticipantSequence",
        "PersonIdentificationCodeSequence",
        "PhysicianApprovingInterpretation",
        "PlateID",
        "PreMedication",
        "ProcedureCodeSequence",
        "ReasonForStudy",
        "ReasonForTheImagingServiceRequest",
        "ReasonForVisit",
        "ReasonForVisitCodeSequence",
        "ReferencedDigitalSignatureSequence",
        "ReferencedPatientAliasSequence",
        "ReferencedSOPInstanceMACSequence",
        "RequestedContrastAgent",
        "RequestedProcedureCodeSequence",
        "RequestedProcedureComments",
        "RequestedProcedureDescription",
        "RequestedProcedureID",
        "RequestedProcedureLocation",
        "RequestingServiceCodeSequence",
        "ResponsiblePersonRole",
        "ResultsComments",
        "ResultsDistributionListSequence",
        "ResultsIDIssuer",
        "ScheduledHumanPerformersSequence",
        "ScheduledPatientInstitutionResidence",
        "ScheduledPerformingPhysicianIdentificationSequence",
        "ScheduledProcedureStepDescription",
        "ScheduledProcedureStepID",
        "ServiceEpisodeDescription",
        "ServiceEpisodeID",
        "StudyComments",
        "StudyIDIssuer",
        "TextComments",
        "TextString",
        "TopicAuthor",
        "TopicKeywords",
        "TopicSubject",
        "TopicTitle",
        "TypeOfPatientID",
        "VerifyingObserverIdentificationCodeSequence",
        "VerifyingObserverName",
        "VerifyingOrganization",
        "VisitComments",
        "ReasonForPerformedProcedureCodeSequence",
        "PerformedProtocolCodeSequence",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "PerformedProcedureStepEndDate",
        "PerformedProcedureStepEndTime",
        "RequestedProcedureStepDescription",
    }
)
#: Attributes the object must keep (Type 1) but whose source value identifies a device: replaced by a dummy.
DUMMY_TEXT = {"DeviceSerialNumber": "0"}
#: Root-level attributes of the PS3.3 Patient, Clinical Trial Subject, General Study, Patient Study, Clinical
#: Trial Study and Clinical Trial Series modules, which highdicom copies from the source into SEG / PMAP.
PATIENT_STUDY_MODULES = frozenset(
    {
        "AccessionNumber",
        "AdditionalPatientHistory",
        "AdmissionID",
        "AdmittingDiagnosesCodeSequence",
        "AdmittingDiagnosesDescription",
        "Allergies",
        "BreedRegistrationSequence",
        "ClinicalTrialCoordinatingCenterName",
        "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
        "ClinicalTrialProtocolEthicsCommitteeName",
        "ClinicalTrialProtocolID",
        "ClinicalTrialProtocolName",
        "ClinicalTrialSeriesDescription",
        "ClinicalTrialSeriesID",
        "ClinicalTrialSiteID",
        "ClinicalTrialSiteName",
        "ClinicalTrialSponsorName",
        "ClinicalTrialSubjectID",
        "ClinicalTrialSubjectReadingID",
        "ClinicalTrialTimePointDescription",
        "ClinicalTrialTimePointID",
        "ClinicalTrialTimePointTypeCodeSequence",
        "ConsentForClinicalTrialUseSequence",
        "ConsultingPhysicianIdentificationSequence",
        "ConsultingPhysicianName",
        "DeidentificationMethod",
        "DeidentificationMethodCodeSequence",
        "EthnicGroupCodeSequence",
        "GeneticModificationsSequence",
        "GroupOfPatientsIdentificationSequence",
        "IssuerOfAccessionNumberSequence",
        "IssuerOfAdmissionIDSequence",
        "IssuerOfClinicalTrialProtocolID",
        "IssuerOfClinicalTrialSeriesID",
        "IssuerOfClinicalTrialSiteID",
        "IssuerOfClinicalTrialSubjectID",
        "IssuerOfClinicalTrialSubjectReadingID",
        "IssuerOfClinicalTrialTimePointID",
        "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence",
        "IssuerOfServiceEpisodeIDSequence",
        "LastMenstrualDate",
        "LongitudinalTemporalEventType",
        "LongitudinalTemporalOffsetFromEvent",
        "MeasuredAPDimension",
        "MeasuredLateralDimension",
        "MedicalAlerts",
        "NameOfPhysiciansReadingStudy",
        "Occupation",
        "OtherClinicalTrialProtocolIDsSequence",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientAge",
        "PatientAlternativeCalendar",
        "PatientBirthDate",
        "PatientBirthDateInAlternativeCalendar",
        "PatientBirthTime",
        "PatientBodyMassIndex",
        "PatientBreedCodeSequence",
        "PatientBreedDescription",
        "PatientComments",
        "PatientDeathDateInAlternativeCalendar",
        "PatientID",
        "PatientIdentityRemoved",
        "PatientName",
        "PatientSex",
        "PatientSexNeutered",
        "PatientSize",
        "PatientSizeCodeSequence",
        "PatientSpeciesCodeSequence",
        "PatientSpeciesDescription",
        "PatientState",
        "PatientWeight",
        "PhysiciansOfRecord",
        "PhysiciansOfRecordIdentificationSequence",
        "PhysiciansReadingStudyIdentificationSequence",
        "PregnancyStatus",
        "ProcedureCodeSequence",
        "QualityControlSubject",
        "ReasonForPerformedProcedureCodeSequence",
        "ReasonForVisit",
        "ReasonForVisitCodeSequence",
        "ReferencedPatientPhotoSequence",
        "ReferencedPatientSequence",
        "ReferencedStudySequence",
        "ReferringPhysicianIdentificationSequence",
        "ReferringPhysicianName",
        "RequestingService",
        "RequestingServiceCodeSequence",
        "ResponsibleOrganization",
        "ResponsiblePerson",
        "ResponsiblePersonRole",
        "ServiceEpisodeDescription",
        "ServiceEpisodeID",
        "SmokingStatus",
        "SourcePatientGroupIdentificationSequence",
        "StrainAdditionalInformation",
        "StrainCodeSequence",
        "StrainDescription",
        "StrainNomenclature",
        "StrainStockSequence",
        "StudyDate",
        "StudyDescription",
        "StudyID",
        "StudyInstanceUID",
        "StudyTime",
        "TypeOfPatientID",
    }
)
#: Of those, the ones the objects need (Type 1 / 2): pseudonymised, remapped, emptied or dummied by the rules;
#: every other one is removed (the Basic profile removes or empties nearly all; none is needed for review).
PATIENT_STUDY_KEEP = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
    }
)
#: UIDs that identify DICOM definitions, not instances: never remapped even when pydicom does not know them.
DEFINITION_UIDS = frozenset(
    {
        "SOPClassUID",
        "ReferencedSOPClassUID",
        "MediaStorageSOPClassUID",
        "AffectedSOPClassUID",
        "RequestedSOPClassUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "ContextGroupExtensionCreatorUID",
        "PrivateInformationCreatorUID",
        "SOPClassesInStudy",
        "ReferencedTransferSyntaxUIDInFile",
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
        "FillerOrderNumberImagingServiceRequest",
        "PlacerOrderNumberImagingServiceRequest",
        "ContrastBolusAgent",
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
        if elem.tag.is_private or keyword in REMOVE or elem.VR == "AS" or keyword.startswith("ClinicalTrial"):
            del ds[elem.tag]
        elif keyword in EMPTY or (elem.VR == "PN" and keyword != "PatientName"):
            elem.value = ""
        elif keyword in DUMMY_TEXT:
            elem.value = DUMMY_TEXT[keyword]
        elif elem.VR == "UI" and elem.value and keyword not in DEFINITION_UIDS:
            values = list(elem.value) if elem.VM > 1 else [elem.value]
            mapped = [str(v) if UID(str(v)).name != str(v) else self.uid(str(v)) for v in values]
            elem.value = mapped if elem.VM > 1 else mapped[0]
        elif elem.VR in DUMMY and elem.value:
            elem.value = DUMMY[elem.VR]

    def apply(self, ds: Dataset) -> Dataset:
        """De-identify ``ds`` in place (file meta included) and return it."""
        patient = str(ds.get("PatientID", "") or ds.get("PatientName", "") or "")
        for elem in list(ds):
            if elem.keyword in PATIENT_STUDY_MODULES and elem.keyword not in PATIENT_STUDY_KEEP:
                del ds[elem.tag]
        ds.walk(self._element)
        alias = self.pseudonym(patient)
        ds.PatientName = f"{alias}^"
        ds.PatientID = alias
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = METHOD_TEXT
        codes = []
        for value, meaning in OPTIONS:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            codes.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(codes)
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        if getattr(ds, "file_meta", None) is not None and "SOPInstanceUID" in ds:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return ds
